"""Operator endpoints for calibration streams."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from rewardcal.calibration.config import StreamConfig
from rewardcal.calibration.curve import Curve

EXPORT_FORMAT = "rewardcal-calibration/1"


class StreamSummary(BaseModel):
    model: str
    group: str
    method: str
    status: str
    version: int
    frozen: bool
    window_samples: int


class UnservedStream(BaseModel):
    model: str
    group: str
    snapshot: str = Field(description="Snapshot file under state_dir/calibration.")


class StreamList(BaseModel):
    object: str = "list"
    data: list[StreamSummary]
    active_groups: int = Field(description="Groups holding state (count against the limit).")
    max_groups: int = Field(description="calibration_max_groups.")
    unserved: list[UnservedStream] = Field(
        default_factory=list,
        description="Snapshots of models this server does not serve: not loaded, not "
        "counted; delete them with DELETE /v1/calibration/{group}?model=...",
    )


class DeletedStream(BaseModel):
    model: str
    group: str
    deleted: bool = True


class CurvePoints(BaseModel):
    feature: str
    alpha: float
    center: float
    x: list[float]
    y: list[float] = Field(description="Fitted bias b(x) before alpha and centering.")


class StreamDetail(StreamSummary):
    config: StreamConfig
    observed_total: int
    curve: list[CurvePoints] = Field(description="Bias curve of each feature step.")
    spearman_raw: float | None = Field(
        description="Spearman(first feature, raw reward) over the window the current curve "
        "was fitted on, measured at that fit (null: no curve yet)."
    )
    spearman_calibrated: float | None = Field(
        description="Spearman(first feature, calibrated reward) over that same window."
    )
    slope_per_1k: float | None = Field(
        description="Bias per 1,000 units of the first feature (the current curve, over "
        "its fit window)."
    )
    span: float | None = Field(
        default=None,
        description="LOWESS span of the current curve: the configured frac, or the one "
        "cross-validation chose at the last refit when frac is auto (null: no LOWESS curve).",
    )


class CalibrationExport(BaseModel):
    """A stream's curve and config, to import elsewhere as a reference curve."""

    model_config = ConfigDict(extra="forbid")

    format: str = EXPORT_FORMAT
    model: str | None = None
    group: str | None = None
    version: int | None = None
    frozen: bool = False
    config: StreamConfig | None = None
    curve: Curve | None = Field(description="The curve, as export wrote it.")


class CalibrationImport(CalibrationExport):
    freeze: bool | None = Field(
        default=None,
        description="Freeze the stream on this curve (reproducible evaluation); otherwise it "
        "calibrates until the stream's own first fit (status reference). Default: the "
        "export's `frozen`.",
    )
