"""The validated wire form of curves and stream state (imports, exports, snapshots).

Everything that reaches a stream from outside the process — an operator's import, a
snapshot file written by an earlier run — is read through these models as a whole before
anything is installed: every float finite, shapes consistent, sizes bounded. A curve that
would make every reward ``NaN`` (std 0, a NaN mean) or a version that breaks integer
formatting is refused with the field that is wrong, instead of being served.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rewardcal.calibration.config import MAX_ALPHA, MAX_CURVE_POINTS, FeatureName, StreamConfig

MAX_VERSION = 2**53
"""Versions are JSON numbers; beyond 2^53 clients reading them as doubles lose digits."""

GROUP_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}"
"""Calibration group names: 1-64 of letters, digits, '_', '.', ':', '-', starting with a
letter or digit; no whitespace or control characters. Always matched against the whole
name (``re.fullmatch``; ``$`` would also accept a final newline)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


Points = Annotated[list[float], Field(min_length=1, max_length=MAX_CURVE_POINTS)]


class LowessEstimatorModel(_Strict):
    kind: Literal["lowess"]
    xs: Points = Field(description="Distinct feature values, strictly increasing.")
    ys: Points = Field(description="Fitted bias at each x.")
    frac: float | None = Field(
        default=None, gt=0, le=1, description="The span it was fitted with (auto: chosen)."
    )

    @model_validator(mode="after")
    def _shape(self) -> LowessEstimatorModel:
        if len(self.xs) != len(self.ys):
            raise ValueError(f"xs and ys differ in length ({len(self.xs)} != {len(self.ys)})")
        if any(b <= a for a, b in zip(self.xs, self.xs[1:], strict=False)):
            raise ValueError("xs must be strictly increasing")
        return self


class MeanEstimatorModel(_Strict):
    kind: Literal["mean"]
    xs: Points = Field(description="Window feature values, sorted.")
    ys: Points = Field(description="Raw rewards of those samples.")
    radius: float = Field(gt=0, description="Neighbourhood half-width d.")
    min_neighbors: int = Field(ge=1, le=MAX_CURVE_POINTS)

    @model_validator(mode="after")
    def _shape(self) -> MeanEstimatorModel:
        if len(self.xs) != len(self.ys):
            raise ValueError(f"xs and ys differ in length ({len(self.xs)} != {len(self.ys)})")
        if any(b < a for a, b in zip(self.xs, self.xs[1:], strict=False)):
            raise ValueError("xs must be sorted")
        return self


class PenaltyEstimatorModel(_Strict):
    kind: Literal["penalty"]
    coef: float = Field(ge=-1e6, le=1e6)


EstimatorModel = Annotated[
    LowessEstimatorModel | MeanEstimatorModel | PenaltyEstimatorModel,
    Field(discriminator="kind"),
]


class ComponentModel(_Strict):
    feature: FeatureName
    alpha: float = Field(ge=0, le=MAX_ALPHA)
    center: float
    estimator: EstimatorModel


class PostModel(_Strict):
    mean: float | None = None
    std: float | None = Field(default=None, gt=0)
    clip: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _pair(self) -> PostModel:
        if (self.mean is None) != (self.std is None):
            raise ValueError("standardization needs both mean and std (or neither)")
        return self


class StatsModel(_Strict):
    samples: int = Field(default=0, ge=0)
    spearman_raw: float | None = None
    spearman_calibrated: float | None = None
    slope_per_1k: float | None = None
    feature_range: tuple[float, float] | None = None


class CurveModel(_Strict):
    """A curve as export writes it and import, snapshots and the server read it."""

    version: int = Field(
        default=0,
        ge=0,
        le=MAX_VERSION,
        description="The version it had where it was exported; an import is given the "
        "next version of the group it is imported into.",
    )
    method: Literal["lowess", "mean", "penalty"]
    components: list[ComponentModel] = Field(min_length=1, max_length=3)
    post: PostModel = PostModel()
    stats: StatsModel = StatsModel()
    fitted_at: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> CurveModel:
        features = [c.feature for c in self.components]
        if len(set(features)) != len(features):
            raise ValueError(f"features repeat: {features}")
        return self


class StreamStateModel(BaseModel):
    """A stream's state in a snapshot file (its window travels beside it as arrays)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str = Field(min_length=1, max_length=256)
    group: str = Field(pattern=f"^{GROUP_PATTERN}$")  # pydantic's (Rust) $ is the very end
    config: StreamConfig
    version: int = Field(ge=0, le=MAX_VERSION)
    frozen: bool = False
    curve: CurveModel | None = None
    reference: CurveModel | None = None
    observed_total: int = Field(default=0, ge=0)
    last_used_at: float | None = Field(default=None, ge=0)
