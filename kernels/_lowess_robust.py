"""The robustness iterations of LOWESS over tie-aggregated data, for any array library.

Notes
-----
Each pass sums the robustness weights (and weights times y) per distinct x with a
bincount, fits every anchor once, spreads the fits back to observations, and turns the
residuals into bisquare weights, like statsmodels' ``it`` extra passes.

y is centred by its mean first: every sum then carries the spread of y rather than its
level, and the mean is added back at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._lowess_fit import LocalFits, interpolation, tricube_count
from ._lowess_groups import FloatArray, Groups, IntArray
from ._lowess_ops import ArrayOps, MomentsFn
from ._lowess_plan import FitPlan


@dataclass(frozen=True)
class Problem:
    """A clean LOWESS problem, ready for any backend (all host numpy).

    Attributes
    ----------
    groups : tie aggregation of the clean x.
    y : clean y, in the order of ``groups.inverse``.
    it : robustness passes.
    data_plan : the anchors fitted in every pass (their windows and summation plan).
    data_anchor_groups : group of each data anchor, or None when every group is one
        (exact mode); otherwise the other groups are interpolated linearly.
    fallback_positions : sorted position whose y statsmodels keeps for a data anchor when
        it skips the regression (fewer than two positive weights).
    sort_order : statsmodels' ``np.argsort(x)`` of the clean x, computed on demand.
    prior : per-observation prior weights (> 0, in the order of ``y``) that multiply the
        tricube and robustness weights of every local fit, or None (all 1). They do not
        change which observations count as having positive weight (statsmodels' skip rule).
    moments : the window-sum kernel its plan was made for (the compiled numba kernel,
        whose plan carries the windows only), used when ``run`` is given none; None: the
        default numpy/torch sums.
    """

    groups: Groups
    y: FloatArray
    it: int
    data_plan: FitPlan
    data_anchor_groups: IntArray | None
    fallback_positions: IntArray
    sort_order: Callable[[], IntArray]
    moments: MomentsFn | None = None
    prior: FloatArray | None = None


class _ExactCounter:
    """statsmodels' positive-weight count for the rare anchors the bounds cannot settle."""

    def __init__(self, groups: Groups) -> None:
        self.groups = groups
        self._by_group: IntArray | None = None

    def __call__(self, plan: FitPlan, rw: FloatArray | None, anchors: IntArray) -> IntArray:
        g = self.groups
        if self._by_group is None:
            self._by_group = np.argsort(g.inverse, kind="stable").astype(np.int64)
        start = g.start
        out = np.empty(anchors.size, dtype=np.int64)
        w = plan.win
        for i, a in enumerate(anchors):
            obs = self._by_group[start[w.lo[a]] : g.end[w.hi[a]]]
            weights = np.ones(obs.size) if rw is None else rw[obs]
            out[i] = tricube_count(g.xs[g.inverse[obs]], weights, w.u[a], w.radius[a])
        return out


@dataclass(frozen=True)
class Leverage:
    """What leave-one-out residuals need from the last pass (``run(..., leverage=True)``).

    ``per_group``: hat value of an observation at its own x per unit robustness weight
    (1 where statsmodels skips the regression: no leave-one-out value there); ``rw``: the
    robustness weights of the last pass per observation (None when ``it == 0``: all 1).
    The hat value of observation i is ``rw[i] * per_group[inverse[i]]``; with prior
    weights ``rw`` is their product with the robustness weights (and the prior alone when
    ``it == 0``).
    """

    per_group: np.ndarray
    rw: np.ndarray | None


def run(
    ops: ArrayOps, problem: Problem, moments: MomentsFn | None = None, leverage: bool = False
) -> Any:
    """Fitted values at every group, as host float64; with ``leverage``, also the last
    pass's :class:`Leverage`."""
    g = problem.groups
    if moments is None:
        moments = problem.moments
    y_center = float(np.mean(problem.y))
    yc = ops.array(problem.y - y_center)
    inverse = ops.array(g.inverse)
    counts = ops.array(g.counts.astype(np.float64))
    counts_prefix = ops.cumsum0(counts)
    xs = ops.array(g.xs)
    fitter = LocalFits(ops, xs, problem.data_plan, moments)
    plan = problem.data_plan
    interp: tuple[Any, Any] | None = None
    if problem.data_anchor_groups is not None and problem.data_anchor_groups.size < g.xs.size:
        left, share = interpolation(g.xs, problem.data_anchor_groups)
        interp = (ops.array(left), ops.array(share))
    counter = _ExactCounter(g)
    fallback: Any = None
    n_groups = int(g.xs.size)
    prior = None if problem.prior is None else ops.array(problem.prior)

    rw: Any = None
    for p in range(problem.it + 1):
        if rw is None:
            if prior is None:
                a_g, b_g = counts, ops.bincount(inverse, yc, n_groups)
            else:
                a_g = ops.bincount(inverse, prior, n_groups)
                b_g = ops.bincount(inverse, prior * yc, n_groups)
            positive = (counts_prefix, counts_prefix)
            rw_host = None
        else:
            # Prior weights only scale the sums: the positive-weight counts below (and
            # the exact counter) see the robustness weights alone.
            weights = rw if prior is None else rw * prior
            a_g = ops.bincount(inverse, weights, n_groups)
            b_g = ops.bincount(inverse, weights * yc, n_groups)
            rw_host = ops.host(rw)
            low = np.flatnonzero(rw_host <= 1e-6)
            tiny = low[rw_host[low] <= 1e-12]
            c6 = g.counts - np.bincount(g.inverse[low], minlength=n_groups)
            c12 = g.counts - np.bincount(g.inverse[tiny], minlength=n_groups)
            positive = (
                ops.cumsum0(ops.array(c12.astype(np.float64))),
                ops.cumsum0(ops.array(c6.astype(np.float64))),
            )

        def count_exact(anchors: IntArray, w: Any = rw_host) -> IntArray:
            return counter(plan, w, anchors)

        fit, fail = fitter(a_g, b_g, positive, count_exact)
        if fail.any():
            if fallback is None:
                order = problem.sort_order()
                fallback = ops.array(problem.y[order[problem.fallback_positions]] - y_center)
            where = ops.array(np.flatnonzero(fail))
            fit[where] = fallback[where]
        if interp is not None:
            left, share = interp
            fit = share * fit[left + 1] + (1.0 - share) * fit[left]
        if p == problem.it:
            out = ops.host(fit) + y_center
            if not leverage:
                return out
            lev = ops.host(fitter.leverage).copy()
            lev[fail] = 1.0
            if interp is not None:
                left, share = (ops.host(a) for a in interp)
                lev = share * lev[left + 1] + (1.0 - share) * lev[left]
            if prior is not None:
                combined = prior if rw is None else rw * prior
                return out, Leverage(lev, ops.host(combined))
            return out, Leverage(lev, None if rw is None else ops.host(rw))
        rw = ops.robustness_weights(yc, fit, inverse)
    raise AssertionError("unreachable")
