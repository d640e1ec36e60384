"""Bias estimators b_hat(c): what each method fits on (feature, reward) samples.

Each is immutable once fitted, evaluates at new feature values, and round-trips through
``to_dict``/``estimator_from_dict`` for export and snapshots. NaN from an estimator means
"no estimate here" and leaves the reward unchanged (RC-Mean with too few neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from rewardcal_kernels import LowessCurve, choose_span, lowess_curve, rc_mean

Array = npt.NDArray[np.float64]

# Above this many samples "auto" switches LOWESS to the grid mode (measured deviation from
# exact is reported in bench/RESULTS.md).
EXACT_LOWESS_MAX_SAMPLES = 65_536


class BiasEstimator(Protocol):
    @property
    def kind(self) -> str: ...

    def __call__(self, c: Array) -> Array: ...

    def to_dict(self) -> dict[str, Any]: ...

    def points(self, max_points: int = 200) -> tuple[list[float], list[float]]: ...


@dataclass(frozen=True, eq=False)
class LowessBias:
    """RC-LWR: LOWESS of reward on the feature (the paper's main method).

    ``frac`` is the span the curve was fitted with: the configured one, or the one
    cross-validation chose when the stream's ``frac`` is ``"auto"`` (None for curves
    stored before spans were recorded).
    """

    curve: LowessCurve
    frac: float | None = None
    kind: str = "lowess"

    @classmethod
    def fit(cls, c: Array, r: Array, frac: float | str, it: int, mode: str) -> LowessBias:
        if mode == "auto":
            mode = "exact" if c.size <= EXACT_LOWESS_MAX_SAMPLES else "grid"
        if frac == "auto":
            finite = np.isfinite(c) & np.isfinite(r)
            if int(finite.sum()) >= 3:
                choice = choose_span(c, r, it=it, mode=mode)  # type: ignore[arg-type]
                return cls(choice.curve, choice.frac)
            frac = 1.0
        span = float(frac)
        return cls(lowess_curve(c, r, frac=span, it=it, mode=mode), span)  # type: ignore[arg-type]

    def __call__(self, c: Array) -> Array:
        return np.asarray(self.curve(c), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.curve.to_dict(), "frac": self.frac}

    def points(self, max_points: int = 200) -> tuple[list[float], list[float]]:
        xs, ys = self.curve.xs, self.curve.ys
        if xs.size > max_points:
            pick = np.unique(np.linspace(0, xs.size - 1, max_points).round().astype(int))
            xs, ys = xs[pick], ys[pick]
        return xs.tolist(), ys.tolist()


@dataclass(frozen=True, eq=False)
class MeanBias:
    """RC-Mean: mean reward of the window's samples whose feature lies within ±d."""

    xs: Array  # window samples, sorted by feature
    ys: Array
    radius: float
    min_neighbors: int
    kind: str = "mean"

    @classmethod
    def fit(
        cls, c: Array, r: Array, radius: float | None, ratio: float, min_neighbors: int
    ) -> MeanBias:
        order = np.argsort(c, kind="stable")
        xs, ys = c[order].copy(), r[order].copy()
        if radius is None:
            radius = spread_radius(xs, ratio)
        xs.setflags(write=False)
        ys.setflags(write=False)
        return cls(xs, ys, float(radius), min_neighbors)

    def __call__(self, c: Array) -> Array:
        return np.asarray(
            rc_mean(self.xs, self.ys, self.radius, self.min_neighbors, x_eval=c),
            dtype=np.float64,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "xs": self.xs.tolist(),
            "ys": self.ys.tolist(),
            "radius": self.radius,
            "min_neighbors": self.min_neighbors,
        }

    def points(self, max_points: int = 200) -> tuple[list[float], list[float]]:
        grid = np.unique(np.linspace(self.xs[0], self.xs[-1], max_points))
        values = self(grid)
        keep = np.isfinite(values)
        return grid[keep].tolist(), values[keep].tolist()


def spread_radius(sorted_c: Array, ratio: float) -> float:
    """d = mean |c_i - c_j| over pairs / ratio.

    The paper uses the mean length gap between chosen and rejected responses; a stream of
    single responses has no pairs, so the mean gap between any two responses (Gini's mean
    difference, O(n) on sorted data) stands in for it.
    """
    n = sorted_c.size
    if n < 2:
        return 1.0
    ranks = np.arange(1, n + 1, dtype=np.float64)
    gini_mean_difference = 2.0 * np.sum((2 * ranks - n - 1) * sorted_c) / (n * (n - 1))
    return max(float(gini_mean_difference) / ratio, 1e-9)


@dataclass(frozen=True, eq=False)
class PenaltyBias:
    """The length-penalty baseline: b(c) = coef * c."""

    coef: float
    kind: str = "penalty"

    def __call__(self, c: Array) -> Array:
        return self.coef * np.asarray(c, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "coef": self.coef}

    def points(self, max_points: int = 200) -> tuple[list[float], list[float]]:
        return [0.0, 1000.0], [0.0, 1000.0 * self.coef]


def estimator_from_dict(data: dict[str, Any]) -> BiasEstimator:
    kind = data.get("kind")
    if kind == "lowess":
        frac = data.get("frac")
        return LowessBias(
            LowessCurve(np.asarray(data["xs"]), np.asarray(data["ys"])),
            None if frac is None else float(frac),
        )
    if kind == "mean":
        return MeanBias(
            np.asarray(data["xs"], dtype=np.float64),
            np.asarray(data["ys"], dtype=np.float64),
            float(data["radius"]),
            int(data["min_neighbors"]),
        )
    if kind == "penalty":
        return PenaltyBias(float(data["coef"]))
    raise ValueError(f"unknown estimator kind {kind!r}")
