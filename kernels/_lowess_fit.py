"""Weighted local linear fits at a fixed set of anchors, for any array library.

The arithmetic is written once against :class:`ArrayOps` (numpy or torch); the Triton
backend swaps in its own kernel for the window sums (:data:`MomentsFn`).

Notes
-----
Per anchor, with ``s = (x - u) / r`` and tricube weights ``w`` times the aggregated
robustness weights, the fit is ``ybar + (u - xbar) * cov_x / max(var_x, 1e-12)``
(``xbar``, ``var_x``, ``cov_x`` under the normalized weights). That is statsmodels'
projection-vector formula rearranged, including its 1e-12 floor on the weighted variance
of x, which decides the answer when all weight sits on one x value.

statsmodels skips the regression when fewer than two observations have weight above
1e-12. That count needs per-observation robustness weights, so it is bracketed with
per-group counts (observations with robustness weight above 1e-12 strictly inside the
radius: an upper bound; above 1e-6 within 0.99 radius: a lower bound) and only the rare
anchors in between are counted one observation at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._lowess_groups import FloatArray, IntArray
from ._lowess_ops import ArrayOps, MomentsFn
from ._lowess_plan import FitPlan
from ._lowess_sums import DeviceWindows, default_moments


class LocalFits:
    """Local linear fits at a fixed set of anchors, for changing weights."""

    def __init__(self, ops: ArrayOps, xs: Any, plan: FitPlan, moments: MomentsFn | None) -> None:
        self.ops = ops
        self.xs = xs
        self.dw = DeviceWindows(ops, plan)
        self.moments = moments
        # Hat value per unit weight of each anchor, from the last call (for run(leverage=True)).
        self.leverage: Any = None

    def __call__(
        self,
        a_g: Any,
        b_g: Any,
        positive: tuple[Any, Any],
        count_exact: Callable[[IntArray], IntArray],
    ) -> tuple[Any, np.ndarray]:
        """Fits for group weight sums ``a_g`` and weighted y sums ``b_g``.

        ``positive`` holds prefix counts (over groups) of observations with robustness
        weight above 1e-12 and above 1e-6; ``count_exact`` counts, for the given anchors,
        the observations statsmodels would see with weight above 1e-12. Returns the fits
        and a host mask of anchors where statsmodels skips the regression.
        """
        ops, dw = self.ops, self.dw
        if self.moments is None:
            m0, sbar, var, ybar, cov = default_moments(ops, self.xs, a_g, b_g, dw)
        else:
            m0, sbar, var, ybar, cov = self.moments(self.xs, a_g, b_g, dw)
        r = dw.radius
        var_x = var * r * r
        slope = cov * r / ops.xp.where(var_x > 1e-12, var_x, 1e-12)
        fit = ybar - sbar * r * slope
        # Hat value of an observation at the anchor (tricube weight 1) per unit robustness
        # weight: 1/m0 + (u - xbar)^2 / (m0 var_x), with the same variance floor as the fit.
        self.leverage = (
            1.0 + sbar * sbar * r * r / ops.xp.where(var_x > 1e-12, var_x, 1e-12)
        ) / ops.xp.where(m0 > 0, m0, 1.0)
        c12, c6 = positive
        upper = ops.host(c12[dw.inner[1]] - c12[dw.inner[0]])
        lower = ops.host(c6[dw.core[1]] - c6[dw.core[0]])
        fail = upper < 2
        unsure = np.flatnonzero(~fail & (lower < 2))
        if unsure.size:
            fail[unsure] = count_exact(unsure) < 2
        return fit, fail


def tricube_count(x: FloatArray, rw: FloatArray, u: float, radius: float) -> int:
    """statsmodels' count of weights above 1e-12, with its exact arithmetic."""
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.abs(x - u) / radius
        d = d * d * d
        d = 1.0 - d
        w = d * d * d * rw
    return int(np.count_nonzero(w > 1e-12))


def interpolation(xs: FloatArray, anchor_groups: IntArray) -> tuple[IntArray, FloatArray]:
    """Left anchor and weight of each group for statsmodels-style linear interpolation."""
    xa = xs[anchor_groups]
    j = np.clip(np.searchsorted(xa, xs, side="right") - 1, 0, xa.size - 2)
    a = (xs - xa[j]) / (xa[j + 1] - xa[j])
    return j.astype(np.int64), a
