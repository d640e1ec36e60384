"""Per-stream calibration configuration (what a training run calibrates, and how)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rewardcal.features import FEATURE_NAMES

MAX_CURVE_POINTS = 131_072
"""Most points one fitted estimator holds (RC-Mean keeps its window; LOWESS one point per
distinct feature value up to 65,536 samples, a grid beyond). An export of that size is
about 6 MB of JSON, so export -> import round-trips within the default 16 MB body limit."""

MAX_ALPHA = 10.0
"""Strength of removal: 1 is the paper's; beyond a few times the bias a curve only adds
noise. Configs and imports outside [0, MAX_ALPHA] are refused."""

FeatureName = Literal["chars", "tokens", "markdown"]
MethodName = Literal["lowess", "mean", "penalty", "none"]


class FeatureStep(BaseModel):
    """One bias characteristic removed, with its own strength."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: FeatureName = "chars"
    alpha: float = Field(
        default=1.0, ge=0, le=MAX_ALPHA, description="Strength of removal (paper: 1.0)."
    )


class StreamConfig(BaseModel):
    """How one stream calibrates. Defaults are the paper's RewardBench setting (RC-LWR)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    method: MethodName = "lowess"
    features: tuple[FeatureStep, ...] = Field(
        default=(FeatureStep(),), min_length=1, description="Applied in sequence."
    )
    frac: float | Literal["auto"] = Field(
        default="auto",
        description="LOWESS span in (0, 1], or auto: each refit chooses it from a grid by "
        "leave-one-out cross-validation on the window (rewardcal_kernels.choose_span).",
    )
    it: int = Field(default=3, ge=0, le=10, description="LOWESS robustness iterations.")
    lowess_mode: Literal["exact", "grid", "auto"] = Field(
        default="auto",
        description="exact (statsmodels to rounding), grid (fits at anchors + interpolation), "
        "auto: exact up to 65,536 samples, grid beyond.",
    )
    center: Literal["none", "mean"] = Field(
        default="none",
        description="none: calibrated rewards are residuals near 0 (paper); mean: subtract "
        "the bias relative to its window mean, keeping the reward level.",
    )
    window: int = Field(default=16384, ge=16, le=4_000_000)
    min_samples: int = Field(default=256, ge=2)
    refit_every: int = Field(default=256, ge=1, description="Refit after this many new samples.")
    refit_interval_s: float = Field(
        default=30.0, gt=0, description="...or after this long, whichever comes first."
    )
    mean_ratio: float = Field(default=4.0, gt=0, description="RC-Mean: d = spread / ratio.")
    mean_radius: float | None = Field(
        default=None, gt=0, description="RC-Mean radius d; default estimated from the window."
    )
    mean_min_neighbors: int = Field(default=20, ge=1)
    penalty_coef: float = Field(default=0.001, description="Length penalty per unit feature.")
    standardize: bool = Field(
        default=False,
        description="Divide calibrated rewards by the window's std after centering on its "
        "mean (remote rewards skip OpenRLHF's own normalization).",
    )
    clip: float | None = Field(default=None, gt=0, description="Clip final rewards to ±clip.")

    @model_validator(mode="after")
    def _check(self) -> StreamConfig:
        if self.frac != "auto" and not 0.0 < self.frac <= 1.0:
            raise ValueError(f"frac must be in (0, 1] or 'auto', got {self.frac}")
        names = [step.feature for step in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"features repeat: {names}")
        if self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) exceeds the window ({self.window})")
        if self.method == "mean" and self.window > MAX_CURVE_POINTS:
            raise ValueError(
                f"method mean keeps its window in the curve: window ({self.window}) must be "
                f"at most {MAX_CURVE_POINTS} so that curves can be exported and imported"
            )
        return self


def feature_index(name: str) -> int:
    return FEATURE_NAMES.index(name)
