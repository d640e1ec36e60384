"""Per-stream calibration configuration: what a training run calibrates, and how.

:class:`StreamConfig` is the one definition of every calibration knob, its default and its
rules. The service's settings nest it (``Settings.calibration``, set through
``REWARDCAL_CALIBRATION_<KNOB>`` or ``--calibration-<knob>``), each stream holds one, export
and import carry one, and the offline ``rewardcal calibrate`` builds one from its flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import NoDecode

from rewardcal.features import FEATURE_NAMES

MAX_CURVE_POINTS = 131_072
"""Most points one fitted estimator holds (RC-Mean keeps its window; LOWESS one point per
distinct feature value up to 65,536 samples, a grid beyond). An export of that size is
about 6 MB of JSON, so export -> import round-trips within the default 16 MB body limit."""

MAX_ALPHA = 10.0
"""Strength of removal: 1 is the paper's; beyond a few times the bias a curve only adds
noise. Configs and imports outside [0, MAX_ALPHA] are refused."""

FeatureName = Literal["chars", "tokens", "markdown"]
FittedMethod = Literal["lowess", "mean", "penalty"]
MethodName = Literal[FittedMethod, "none"]
CenterName = Literal["none", "mean"]
LowessMode = Literal["exact", "grid", "auto"]


class FeatureStep(BaseModel):
    """One bias characteristic removed, with its own strength."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: FeatureName = "chars"
    alpha: float = Field(
        default=1.0, ge=0, le=MAX_ALPHA, description="Strength of removal (paper: 1.0)."
    )


class StreamConfig(BaseModel):
    """How one stream calibrates. Defaults: the paper's RC-LWR, with the span chosen by
    cross-validation."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    method: MethodName = Field(
        default="lowess",
        description="lowess: the paper's RC-LWR (default); mean: RC-Mean; penalty: "
        "raw - coef x length; none: reward = raw.",
    )
    # NoDecode: in the environment, REWARDCAL_CALIBRATION_FEATURES is comma-separated names
    # (the settings unflatten them), not JSON.
    features: Annotated[tuple[FeatureStep, ...], NoDecode] = Field(
        default=(FeatureStep(),),
        min_length=1,
        description="Bias characteristics removed in sequence, each fitted on what the "
        "previous ones left.",
    )
    frac: float | Literal["auto"] = Field(
        default="auto",
        description="LOWESS span: auto (default) lets each refit choose it by "
        "leave-one-out cross-validation on the window (rewardcal_kernels.choose_span); a "
        "number in (0, 1] fixes it (1.0: the paper's RewardBench setting, smoothest; 0.3: "
        "its AlpacaEval setting).",
    )
    it: int = Field(default=3, ge=0, le=10, description="LOWESS robustness iterations.")
    lowess_mode: LowessMode = Field(
        default="auto",
        description="exact (statsmodels to rounding), grid (fits at anchors + interpolation), "
        "auto: exact up to 65,536 samples, grid beyond.",
    )
    center: CenterName = Field(
        default="none",
        description="none: calibrated rewards are residuals near 0 (paper); mean: subtract "
        "the bias relative to its window mean, keeping the reward level.",
    )
    window: int = Field(
        default=16384,
        ge=16,
        le=4_000_000,
        description="Rolling window per stream: longer = steadier curve, slower to follow "
        "a policy that drifts.",
    )
    half_life: int | None = Field(
        default=None,
        ge=1,
        description="LOWESS only: weight each window sample by 0.5 ** (age / half_life), age "
        "in samples (0 = newest), so the curve follows a drifting policy instead of "
        "averaging its whole window (exponential forgetting). RL: 512 with a 4096 window "
        "(bench/RESULTS.md). Unset: the whole window weighs the same.",
    )
    min_samples: int = Field(
        default=256, ge=2, description="Observations before the first curve is fitted."
    )
    refit_every: int = Field(
        default=256, ge=1, description="Refit after this many new observations..."
    )
    refit_interval_s: float = Field(
        default=30.0, gt=0, description="...or after this many seconds, whichever first."
    )
    mean_ratio: float = Field(default=4.0, gt=0, description="RC-Mean: d = spread / ratio.")
    mean_radius: float | None = Field(
        default=None, gt=0, description="RC-Mean radius d; default estimated from the window."
    )
    mean_min_neighbors: int = Field(
        default=20, ge=1, description="RC-Mean: fewest samples within d to estimate the bias."
    )
    penalty_coef: float = Field(default=0.001, description="Length penalty per unit feature.")
    standardize: bool = Field(
        default=False,
        description="Divide calibrated rewards by the window's std after centering on its "
        "mean (remote rewards skip OpenRLHF's own normalization).",
    )
    clip: float | None = Field(default=None, gt=0, description="Clip final rewards to +-clip.")

    @model_validator(mode="after")
    def _check(self) -> StreamConfig:
        if self.frac != "auto" and not 0.0 < self.frac <= 1.0:
            raise ValueError(f"frac must be in (0, 1] or 'auto', got {self.frac}")
        names = [step.feature for step in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"features repeat: {names}")
        if self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) exceeds the window ({self.window})")
        if self.half_life is not None and self.method != "lowess":
            raise ValueError(f"half_life applies to method lowess, not {self.method!r}")
        if self.method == "mean" and self.window > MAX_CURVE_POINTS:
            raise ValueError(
                f"method mean keeps its window in the curve: window ({self.window}) must be "
                f"at most {MAX_CURVE_POINTS} so that curves can be exported and imported"
            )
        return self

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> StreamConfig:
        """Build one from its flat form (environment variables, flags): ``features`` may
        be names (a list, or one comma-separated string) and ``alpha`` the strength of
        every step; other keys are the fields'."""
        return cls.model_validate(unflatten(values))


FLAT_ALPHA = "alpha"
"""The flat form's one knob that is not a field: the strength of every feature step."""


def unflatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """The flat form of a config (see :meth:`StreamConfig.from_flat`) as field values."""
    data = dict(values)
    alpha = data.pop(FLAT_ALPHA, None)
    steps = data.pop("features", None)
    if isinstance(steps, str):
        steps = [name.strip() for name in steps.split(",") if name.strip()]
    if steps is None and alpha is not None:
        steps = [step.feature for step in StreamConfig().features]
    if steps is not None:
        steps = [{"feature": s} if isinstance(s, str) else _plain(s) for s in steps]
        if alpha is not None:
            steps = [{**step, "alpha": alpha} for step in steps]
        data["features"] = steps
    return data


def _plain(step: Any) -> Any:
    return step.model_dump() if isinstance(step, FeatureStep) else step


def feature_index(name: str) -> int:
    return FEATURE_NAMES.index(name)
