"""The file to point trainers at: verl's ``reward.custom_reward_function.path`` (as
``pkg://rewardcal_client.integrations`` or as this file's path) with ``.name=compute_score``.

It only re-exports :mod:`rewardcal_client.trainers`. verl >= 0.7 executes a file it loads by
path under a generated name that is not in ``sys.modules``; a dataclass defined in such a
file fails to build (``dataclasses`` looks its module up there), and its objects would not
pickle to Ray workers. Everything is therefore defined in a normally imported module and
this file defines nothing of its own.
"""

from rewardcal_client.trainers import (
    DEFAULT_PROMPT_KEYS,
    URL_ENV,
    TRLRewardFunc,
    VerlComputeScore,
    close_pooled_clients,
    compute_score,
    make_trl_reward_func,
    make_verl_compute_score,
    pooled_client,
)

__all__ = [
    "DEFAULT_PROMPT_KEYS",
    "URL_ENV",
    "TRLRewardFunc",
    "VerlComputeScore",
    "close_pooled_clients",
    "compute_score",
    "make_trl_reward_func",
    "make_verl_compute_score",
    "pooled_client",
]
