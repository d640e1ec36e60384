"""An immutable, versioned calibration curve: fit it on a window, apply it to rewards.

calibrated = raw - sum over features f of alpha_f * (b_f(c_f) - center_f), each b_f fitted
on the rewards left after the previous features were removed (features in sequence).
Optional post-steps: standardization by the window's calibrated mean/std, then clipping.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata, spearmanr

from rewardcal.calibration.config import StreamConfig, feature_index
from rewardcal.calibration.estimators import (
    BiasEstimator,
    LowessBias,
    MeanBias,
    PenaltyBias,
    estimator_from_dict,
)
from rewardcal.calibration.models import ComponentModel, CurveModel
from rewardcal.features import FEATURE_NAMES

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Component:
    feature: str
    alpha: float
    estimator: BiasEstimator
    center: float

    def bias(self, c: Array) -> Array:
        """alpha * (b(c) - center); 0 where the estimator has no estimate."""
        shift = self.alpha * (self.estimator(c) - self.center)
        return np.where(np.isfinite(shift), shift, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "alpha": self.alpha,
            "center": self.center,
            "estimator": self.estimator.to_dict(),
        }

    @classmethod
    def from_model(cls, data: ComponentModel) -> Component:
        return cls(
            feature=data.feature,
            alpha=data.alpha,
            center=data.center,
            estimator=estimator_from_dict(data.estimator.model_dump()),
        )


@dataclass(frozen=True)
class PostSteps:
    mean: float | None = None  # standardization (None: off)
    std: float | None = None
    clip: float | None = None

    def apply(self, r: Array) -> Array:
        if self.mean is not None and self.std is not None:
            r = (r - self.mean) / self.std
        if self.clip is not None:
            r = np.clip(r, -self.clip, self.clip)
        return r


@dataclass(frozen=True)
class CurveStats:
    """Measured on the window the curve was fitted on."""

    samples: int
    spearman_raw: float | None
    spearman_calibrated: float | None
    slope_per_1k: float | None  # bias of the first feature per 1,000 units of it
    feature_range: tuple[float, float] | None


@dataclass(frozen=True, eq=False)
class Curve:
    version: int
    method: str
    components: tuple[Component, ...]
    post: PostSteps
    stats: CurveStats
    fitted_at: float = field(default_factory=time.time)

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

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "method": self.method,
            "components": [c.to_dict() for c in self.components],
            "post": {"mean": self.post.mean, "std": self.post.std, "clip": self.post.clip},
            "stats": {
                "samples": self.stats.samples,
                "spearman_raw": self.stats.spearman_raw,
                "spearman_calibrated": self.stats.spearman_calibrated,
                "slope_per_1k": self.stats.slope_per_1k,
                "feature_range": list(self.stats.feature_range)
                if self.stats.feature_range
                else None,
            },
            "fitted_at": self.fitted_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Curve:
        """Validate a curve as a whole (:class:`CurveModel`; raises pydantic's
        ValidationError, a ValueError) and build it."""
        return cls.from_model(CurveModel.model_validate(data))

    @classmethod
    def from_model(cls, data: CurveModel) -> Curve:
        stats = data.stats
        return cls(
            version=data.version,
            method=data.method,
            components=tuple(Component.from_model(c) for c in data.components),
            post=PostSteps(data.post.mean, data.post.std, data.post.clip),
            stats=CurveStats(
                samples=stats.samples,
                spearman_raw=stats.spearman_raw,
                spearman_calibrated=stats.spearman_calibrated,
                slope_per_1k=stats.slope_per_1k,
                feature_range=stats.feature_range,
            ),
            fitted_at=data.fitted_at,
        )

    def with_version(self, version: int) -> Curve:
        return dataclasses.replace(self, version=version)


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


def _estimator(config: StreamConfig, c: Array, r: Array) -> BiasEstimator:
    if config.method == "lowess":
        return LowessBias.fit(c, r, config.frac, config.it, config.lowess_mode)
    if config.method == "mean":
        return MeanBias.fit(c, r, config.mean_radius, config.mean_ratio, config.mean_min_neighbors)
    if config.method == "penalty":
        return PenaltyBias(config.penalty_coef)
    raise ValueError(f"method {config.method!r} fits no curve")


def slope_per_1k(c: Array, bias: Array) -> float | None:
    """Least-squares slope of the bias on the feature, per 1,000 units."""
    if c.size < 2 or np.ptp(c) == 0:
        return None
    cc = c - c.mean()
    return float(np.dot(cc, bias - bias.mean()) / np.dot(cc, cc) * 1000.0)


def fit_curve(config: StreamConfig, features: Array, raw: Array, version: int) -> Curve:
    """Fit every feature step in sequence on the window (features (n, F), raw (n,))."""
    residual = raw.astype(np.float64, copy=True)
    components: list[Component] = []
    first_bias: Array | None = None
    for step in config.features:
        c = features[:, feature_index(step.feature)]
        estimator = _estimator(config, c, residual)
        b = estimator(c)
        finite = np.isfinite(b)
        center = float(b[finite].mean()) if config.center == "mean" and finite.any() else 0.0
        component = Component(step.feature, step.alpha, estimator, center)
        shift = component.bias(c)
        if first_bias is None:
            first_bias = shift
        residual = residual - shift
        components.append(component)

    post = PostSteps(clip=config.clip)
    if config.standardize and residual.size > 1:
        std = float(residual.std())
        post = PostSteps(float(residual.mean()), std if std > 0 else 1.0, config.clip)
    first = features[:, feature_index(config.features[0].feature)]
    rho_raw, rho_calibrated = spearman_against(first, raw, residual)
    stats = CurveStats(
        samples=int(raw.size),
        spearman_raw=rho_raw,
        spearman_calibrated=rho_calibrated,
        slope_per_1k=slope_per_1k(first, first_bias) if first_bias is not None else None,
        feature_range=(float(first.min()), float(first.max())) if first.size else None,
    )
    return Curve(version, config.method, tuple(components), post, stats)


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
