"""The validated state of a stream in a snapshot file, and what names a group.

Everything that reaches a stream from outside the process — an operator's import, a
snapshot file written by an earlier run, the shared store — is read through pydantic
models as a whole before anything is installed: every float finite, shapes consistent,
sizes bounded. A curve (:class:`~rewardcal.calibration.curve.Curve`) validates itself; a
curve that would make every reward ``NaN`` (std 0, a NaN mean) or a version that breaks
integer formatting is refused with the field that is wrong, instead of being served.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from rewardcal.calibration.config import StreamConfig
from rewardcal.calibration.curve import MAX_VERSION, Curve

GROUP_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}"
"""Calibration group names: 1-64 of letters, digits, '_', '.', ':', '-', starting with a
letter or digit; no whitespace or control characters. Always matched against the whole
name (``re.fullmatch``; ``$`` would also accept a final newline)."""


class StreamStateModel(BaseModel):
    """A stream's state in a snapshot file (its window travels beside it as arrays)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str = Field(min_length=1, max_length=256)
    group: str = Field(pattern=f"^{GROUP_PATTERN}$")  # pydantic's (Rust) $ is the very end
    config: StreamConfig
    version: int = Field(ge=0, le=MAX_VERSION)
    frozen: bool = False
    curve: Curve | None = None
    reference: Curve | None = None
    observed_total: int = Field(default=0, ge=0)
    last_used_at: float | None = Field(default=None, ge=0)
