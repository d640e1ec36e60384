"""Bias estimators b_hat(c): what each method fits on (feature, reward) samples.

Each is an immutable pydantic model: fitted here, evaluated at new feature values, and
written to and read from exports, snapshots and the shared store as itself (its fields
are its wire form; reading validates them as a whole). NaN from an estimator means "no
estimate here" and leaves the reward unchanged (RC-Mean with too few neighbours).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    WithJsonSchema,
    model_validator,
)

from rewardcal.calibration.config import MAX_CURVE_POINTS, LowessMode
from rewardcal_kernels import LowessCurve, choose_span, lowess_curve, rc_mean

Array = npt.NDArray[np.float64]

# Above this many samples "auto" switches LOWESS to the grid mode (measured deviation from
# exact is reported in bench/RESULTS.md).
EXACT_LOWESS_MAX_SAMPLES = 65_536


class Strict(BaseModel):
    """Frozen, no unknown fields, every float finite: what a curve's parts validate as."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


def _points(value: Any) -> Array:
    """A JSON list of numbers (or an array) as a read-only float64 array."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("must be a list of numbers") from None
    if array.ndim != 1:
        raise ValueError("must be a list of numbers")
    if not 1 <= array.size <= MAX_CURVE_POINTS:
        raise ValueError(f"must hold 1 to {MAX_CURVE_POINTS} points, got {array.size}")
    if not np.all(np.isfinite(array)):
        raise ValueError("must be finite numbers")
    array.setflags(write=False)
    return array


Points = Annotated[
    Array,
    PlainValidator(_points),
    PlainSerializer(lambda array: array.tolist(), return_type=list[float]),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "number"},
            "minItems": 1,
            "maxItems": MAX_CURVE_POINTS,
        }
    ),
]
"""Curve points: float64 arrays in memory (evaluated per request), lists of numbers on
the wire (floats round-trip exactly through JSON)."""


def _same_length(xs: Array, ys: Array) -> None:
    if xs.size != ys.size:
        raise ValueError(f"xs and ys differ in length ({xs.size} != {ys.size})")


class LowessBias(Strict):
    """RC-LWR: LOWESS of reward on the feature (the paper's main method); linear between
    its fitted points, flat beyond them."""

    # Evaluated by rewardcal_kernels.LowessCurve (built once, when the model is).

    kind: Literal["lowess"]
    xs: Points = Field(description="Distinct feature values, strictly increasing.")
    ys: Points = Field(description="Fitted bias at each x.")
    frac: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="The span it was fitted with (auto: chosen); null for curves stored "
        "before spans were recorded.",
    )
    _curve: LowessCurve = PrivateAttr()

    @model_validator(mode="after")
    def _shape(self) -> LowessBias:
        _same_length(self.xs, self.ys)
        if np.any(np.diff(self.xs) <= 0):
            raise ValueError("xs must be strictly increasing")
        return self

    def model_post_init(self, context: Any, /) -> None:
        self._curve = LowessCurve(self.xs, self.ys)

    @classmethod
    def fit(
        cls,
        c: Array,
        r: Array,
        frac: float | str,
        it: int,
        mode: LowessMode,
        weights: Array | None = None,
    ) -> LowessBias:
        """``weights``: prior weight per sample (recency), see :func:`recency_weights`."""
        if mode == "auto":
            mode = "exact" if c.size <= EXACT_LOWESS_MAX_SAMPLES else "grid"
        if frac == "auto":
            finite = np.isfinite(c) & np.isfinite(r)
            if int(finite.sum()) >= 3:
                choice = choose_span(c, r, it=it, mode=mode, weights=weights)
                return cls(kind="lowess", xs=choice.curve.xs, ys=choice.curve.ys, frac=choice.frac)
            frac = 1.0
        span = float(frac)
        curve = lowess_curve(c, r, frac=span, it=it, mode=mode, weights=weights)
        return cls(kind="lowess", xs=curve.xs, ys=curve.ys, frac=span)

    @property
    def curve(self) -> LowessCurve:
        return self._curve

    def __call__(self, c: Array) -> Array:
        return np.asarray(self._curve(c), dtype=np.float64)

    def points(self, max_points: int = 200) -> tuple[list[float], list[float]]:
        xs, ys = self.xs, self.ys
        if xs.size > max_points:
            pick = np.unique(np.linspace(0, xs.size - 1, max_points).round().astype(int))
            xs, ys = xs[pick], ys[pick]
        return xs.tolist(), ys.tolist()


# Weights below this are raised to it: a half-life far shorter than the window would
# otherwise underflow to 0, which LOWESS refuses (such samples weigh nothing either way).
_MIN_RECENCY_WEIGHT = 1e-200


def recency_weights(n: int, half_life: float | None) -> Array | None:
    """``0.5 ** (age / half_life)`` for ``n`` samples oldest first (age 0 = newest).

    Exponential forgetting, the weighting of recursive least squares with a forgetting
    factor ``lambda = 0.5 ** (1 / half_life)`` (Ljung & Soederstroem, *Theory and Practice
    of Recursive Identification*, 1983, ch. 2; Haykin, *Adaptive Filter Theory*, ch. 10):
    a sample ``half_life`` samples old counts half as much as the newest.
    """
    if half_life is None:
        return None
    age = np.arange(n - 1, -1, -1, dtype=np.float64)
    return np.maximum(np.exp2(-age / float(half_life)), _MIN_RECENCY_WEIGHT)


class MeanBias(Strict):
    """RC-Mean: mean reward of the window's samples whose feature lies within ±d."""

    kind: Literal["mean"]
    xs: Points = Field(description="Window feature values, sorted.")
    ys: Points = Field(description="Raw rewards of those samples.")
    radius: float = Field(gt=0, description="Neighbourhood half-width d.")
    min_neighbors: int = Field(ge=1, le=MAX_CURVE_POINTS)

    @model_validator(mode="after")
    def _shape(self) -> MeanBias:
        _same_length(self.xs, self.ys)
        if np.any(np.diff(self.xs) < 0):
            raise ValueError("xs must be sorted")
        return self

    @classmethod
    def fit(
        cls, c: Array, r: Array, radius: float | None, ratio: float, min_neighbors: int
    ) -> MeanBias:
        order = np.argsort(c, kind="stable")
        xs, ys = c[order], r[order]
        if radius is None:
            radius = spread_radius(xs, ratio)
        return cls(kind="mean", xs=xs, ys=ys, radius=float(radius), min_neighbors=min_neighbors)

    def __call__(self, c: Array) -> Array:
        return np.asarray(
            rc_mean(self.xs, self.ys, self.radius, self.min_neighbors, x_eval=c),
            dtype=np.float64,
        )

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


class PenaltyBias(Strict):
    """The length-penalty baseline: b(c) = coef * c."""

    kind: Literal["penalty"]
    coef: float = Field(ge=-1e6, le=1e6)

    def __call__(self, c: Array) -> Array:
        return self.coef * np.asarray(c, dtype=np.float64)

    def points(self, max_points: int = 200) -> tuple[list[float], list[float]]:
        return [0.0, 1000.0], [0.0, 1000.0 * self.coef]


BiasEstimator = Annotated[LowessBias | MeanBias | PenaltyBias, Field(discriminator="kind")]
