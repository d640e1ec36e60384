"""Offline calibration of reward files: ``rewardcal calibrate FILE``.

The paper's in-sample protocol (Huang et al. 2024) on a file of scored samples or of
RewardBench-style pairs: read (:mod:`.io`), pool and calibrate (:mod:`.protocol`), score
RewardBench sections (:mod:`.rewardbench`), report (:mod:`.report`), plot (:mod:`.plot`).
Heavy modules load when the command runs, not when ``rewardcal`` builds its parser.
"""

from rewardcal.offline.command import EXIT_BAD_INPUT, add_calibrate_parser, cmd_calibrate
from rewardcal.offline.io import InputError

__all__ = ["EXIT_BAD_INPUT", "InputError", "add_calibrate_parser", "cmd_calibrate"]
