"""An immutable, versioned calibration curve: fit it on a window, apply it to rewards.

calibrated = raw - sum over features f of alpha_f * (b_f(c_f) - center_f), each b_f fitted
on the rewards left after the previous features were removed (features in sequence).
Optional post-steps: standardization by the window's calibrated mean/std, then clipping.

A curve is a pydantic model: what a fit produces, what streams hold and requests apply,
and what exports, imports, snapshots and the shared store write and read (validated as a
whole). Its statistics are measured once, when it is fitted (and its drift when it is
published), and stored with it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator
from scipy.stats import rankdata, spearmanr

from rewardcal.calibration.blas import one_blas_thread
from rewardcal.calibration.config import (
    MAX_ALPHA,
    FeatureName,
    FittedMethod,
    StreamConfig,
    feature_index,
)
from rewardcal.calibration.estimators import (
    Array,
    BiasEstimator,
    LowessBias,
    MeanBias,
    PenaltyBias,
    Strict,
    recency_weights,
)
from rewardcal.features import FEATURE_NAMES

MAX_VERSION = 2**53
"""Versions are JSON numbers; beyond 2^53 clients reading them as doubles lose digits."""


class Component(Strict):
    """One feature step of a curve: its estimator, strength and center."""

    feature: FeatureName
    alpha: float = Field(ge=0, le=MAX_ALPHA)
    center: float
    estimator: BiasEstimator

    def shift(self, b_hat: Array) -> Array:
        """alpha * (b_hat - center); 0 where there is no estimate."""
        shift = self.alpha * (b_hat - self.center)
        return np.where(np.isfinite(shift), shift, 0.0)

    def bias(self, c: Array) -> Array:
        """What this step removes from rewards with feature values ``c``."""
        return self.shift(self.estimator(c))


class PostSteps(Strict):
    mean: float | None = None  # standardization (None: off)
    std: float | None = Field(default=None, gt=0)
    clip: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _pair(self) -> PostSteps:
        if (self.mean is None) != (self.std is None):
            raise ValueError("standardization needs both mean and std (or neither)")
        return self

    def apply(self, r: Array) -> Array:
        if self.mean is not None and self.std is not None:
            r = (r - self.mean) / self.std
        if self.clip is not None:
            r = np.clip(r, -self.clip, self.clip)
        return r


class CurveStats(Strict):
    """Measured on the window the curve was fitted on (first feature), once per fit."""

    samples: int = Field(default=0, ge=0)
    spearman_raw: float | None = None
    spearman_calibrated: float | None = None
    slope_per_1k: float | None = None  # bias of the first feature per 1,000 units of it
    feature_range: tuple[float, float] | None = None
    drift: float | None = Field(
        default=None,
        ge=0,
        description="Largest |bias change| of the first feature from the curve this one "
        "replaced, over feature_range (null: nothing replaced).",
    )


class Curve(Strict):
    """A curve as streams apply it and export, import, snapshots and the store carry it."""

    version: int = Field(
        default=0,
        ge=0,
        le=MAX_VERSION,
        description="The version it had where it was exported; an import is given the "
        "next version of the group it is imported into.",
    )
    method: FittedMethod
    components: tuple[Component, ...] = Field(min_length=1, max_length=3)
    post: PostSteps = PostSteps()
    stats: CurveStats = CurveStats()
    fitted_at: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Curve:
        features = [c.feature for c in self.components]
        if len(set(features)) != len(features):
            raise ValueError(f"features repeat: {features}")
        return self

    @property
    def span(self) -> float | None:
        """LOWESS span of the first feature's curve (None for other methods)."""
        for component in self.components:
            if isinstance(component.estimator, LowessBias):
                return component.estimator.frac
        return None

    def apply_arrays(self, features: Array, raw: Array) -> tuple[Array, Array]:
        """(calibrated, bias) for features (n, F) and raw (n,)."""
        bias = np.zeros_like(raw)
        for component in self.components:
            bias += component.bias(features[:, feature_index(component.feature)])
        calibrated = self.post.apply(raw - bias)
        return calibrated, bias

    def apply(
        self, features: Sequence[Mapping[str, float]], raw: Sequence[float]
    ) -> tuple[list[float], list[float]]:
        matrix = features_matrix(features)
        calibrated, bias = self.apply_arrays(matrix, np.asarray(raw, dtype=np.float64))
        return calibrated.tolist(), bias.tolist()

    def with_version(self, version: int) -> Curve:
        return self.model_copy(update={"version": version})

    def published(self, version: int, replaces: Curve | None) -> Curve:
        """This fit as a stream publishes it: its version, and its drift from the curve it
        replaces (measured here, once, and stored in its stats)."""
        stats = self.stats.model_copy(update={"drift": curve_drift(replaces, self)})
        return self.model_copy(update={"version": version, "stats": stats})


def features_matrix(features: Sequence[Mapping[str, float]]) -> Array:
    return np.array(
        [[float(f.get(name, 0.0)) for name in FEATURE_NAMES] for f in features],
        dtype=np.float64,
    ).reshape(len(features), len(FEATURE_NAMES))


def spearman(a: Array, b: Array) -> float | None:
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    value = float(spearmanr(a, b).statistic)
    return value if np.isfinite(value) else None


def spearman_against(a: Array, *others: Array) -> list[float | None]:
    """``[spearman(a, b) for b in others]``, ranking ``a`` once.

    A refit reports the length-reward correlation before and after calibration over the
    whole window; at a million rows ranking is most of a refit's cost, and the feature's
    ranks are shared (average ranks for ties, as ``spearmanr``; pearson of the ranks).
    """
    if a.size < 3 or np.ptp(a) == 0:
        return [None for _ in others]
    a_dev = rankdata(a) - (a.size + 1) / 2.0  # the mean of average ranks is (n + 1) / 2
    a_norm = float(np.dot(a_dev, a_dev))
    values: list[float | None] = []
    for b in others:
        if b.size != a.size or np.ptp(b) == 0:
            values.append(None)
            continue
        b_dev = rankdata(b) - (b.size + 1) / 2.0
        value = float(np.dot(a_dev, b_dev) / np.sqrt(a_norm * float(np.dot(b_dev, b_dev))))
        values.append(value if np.isfinite(value) else None)
    return values


def slope_per_1k(c: Array, bias: Array) -> float | None:
    """Least-squares slope of the bias on the feature, per 1,000 units."""
    if c.size < 2 or np.ptp(c) == 0:
        return None
    cc = c - c.mean()
    return float(np.dot(cc, bias - bias.mean()) / np.dot(cc, cc) * 1000.0)


@dataclass(frozen=True)
class WindowFit:
    """A fitted curve, and what each of its steps did to the window it was fitted on."""

    curve: Curve
    b_hat: tuple[Array, ...]  # each step's estimate at each sample (NaN: no estimate)
    shifts: tuple[Array, ...]  # what each step removed from each sample
    residual: Array  # raw minus every shift (before standardization and clipping)


def _estimator(
    config: StreamConfig, c: Array, r: Array, radius: float | None
) -> LowessBias | MeanBias | PenaltyBias:
    if config.method == "lowess":
        weights = recency_weights(c.size, config.half_life)
        return LowessBias.fit(c, r, config.frac, config.it, config.lowess_mode, weights)
    if config.method == "mean":
        return MeanBias.fit(c, r, radius, config.mean_ratio, config.mean_min_neighbors)
    if config.method == "penalty":
        return PenaltyBias(kind="penalty", coef=config.penalty_coef)
    raise ValueError(f"method {config.method!r} fits no curve")


@one_blas_thread()  # see rewardcal.calibration.blas
def fit_window(
    config: StreamConfig,
    features: Array,
    raw: Array,
    version: int = 0,
    *,
    pairs: int | None = None,
    mean_radius: Mapping[str, float] | None = None,
) -> WindowFit:
    """Fit every feature step in sequence on a window (features (n, F), raw (n,)).

    The online refits and the offline ``rewardcal calibrate`` both fit here. What only
    the offline protocol has:

    - ``pairs``: the window is ``pairs`` chosen responses followed by their rejected ones
      (RewardBench pools); a pair's rewards are calibrated only where both have an
      estimate (RC-Mean's min-neighbours rule, as the paper's script), else both stay.
    - ``mean_radius``: RC-Mean's d per feature (the paper's mean chosen-rejected gap /
      ratio), instead of the config's radius or the window's spread.
    """
    method = config.method
    if method == "none":
        raise ValueError("method none fits no curve")
    residual = raw.astype(np.float64, copy=True)
    components: list[Component] = []
    b_hats: list[Array] = []
    shifts: list[Array] = []
    for step in config.features:
        c = features[:, feature_index(step.feature)]
        radius = (mean_radius or {}).get(step.feature, config.mean_radius)
        estimator = _estimator(config, c, residual, radius)
        b_hat = estimator(c)
        if pairs is not None:
            both = np.isfinite(b_hat[:pairs]) & np.isfinite(b_hat[pairs:])
            b_hat[:pairs][~both] = np.nan
            b_hat[pairs:][~both] = np.nan
        finite = np.isfinite(b_hat)
        center = float(b_hat[finite].mean()) if config.center == "mean" and finite.any() else 0.0
        component = Component(
            feature=step.feature, alpha=step.alpha, center=center, estimator=estimator
        )
        shift = component.shift(b_hat)
        residual = residual - shift
        components.append(component)
        b_hats.append(b_hat)
        shifts.append(shift)

    post = PostSteps(clip=config.clip)
    if config.standardize and residual.size > 1:
        std = float(residual.std())
        post = PostSteps(mean=float(residual.mean()), std=std if std > 0 else 1.0, clip=config.clip)
    first = features[:, feature_index(config.features[0].feature)]
    rho_raw, rho_calibrated = spearman_against(first, raw, residual)
    stats = CurveStats(
        samples=int(raw.size),
        spearman_raw=rho_raw,
        spearman_calibrated=rho_calibrated,
        slope_per_1k=slope_per_1k(first, shifts[0]),
        feature_range=(float(first.min()), float(first.max())) if first.size else None,
    )
    curve = Curve(
        version=version,
        method=method,
        components=tuple(components),
        post=post,
        stats=stats,
        fitted_at=time.time(),
    )
    return WindowFit(curve, tuple(b_hats), tuple(shifts), residual)


def fit_curve(config: StreamConfig, features: Array, raw: Array, version: int = 0) -> Curve:
    """The curve of :func:`fit_window` (what a refit publishes)."""
    return fit_window(config, features, raw, version).curve


def curve_drift(old: Curve | None, new: Curve, grid_points: int = 256) -> float | None:
    """Largest |bias_new - bias_old| of the first feature over the new window's range."""
    if old is None or not old.components or not new.components:
        return None
    if new.stats.feature_range is None:
        return None
    lo, hi = new.stats.feature_range
    grid = np.linspace(lo, hi, grid_points)
    old_c, new_c = old.components[0], new.components[0]
    if old_c.feature != new_c.feature:
        return None
    return float(np.max(np.abs(new_c.bias(grid) - old_c.bias(grid))))
