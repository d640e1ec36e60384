"""Choosing the LOWESS span by leave-one-out cross-validation (``calibration_frac=auto``).

Notes
-----
LOWESS with fixed weights is a linear smoother, ``fit = H y``, so the leave-one-out
residual needs no refit: ``(y_i - fit_i) / (1 - H_ii)`` (Hastie, Tibshirani & Friedman,
*The Elements of Statistical Learning*, 2nd ed., 2009, section 7.10, eq. 7.52). For a local
linear fit at the observation's own x the hat value is
``H_ii = rw_i (1/m0 + (x_i - xbar)^2 / (m0 var_x))``, with ``m0`` the window's tricube x
robustness weight mass and ``xbar``, ``var_x`` its weighted mean and variance: the window
sums the exact kernel already forms, so scoring a span costs one fit.

The robustness iterations are kept as the paper runs them (``it=3``): the hat values are
those of the last pass, whose weights are held fixed, and the score is the mean squared
leave-one-out residual weighted by those robustness weights, so that the outliers the fit
already discounts do not choose the span (a robust cross-validation in the spirit of
Cleveland, 1979, section 4). Observations where the fit has no leave-one-out value (hat
value >= 1, or statsmodels' fallback to a raw y) are left out of every score alike.

Among the candidate spans the choice follows the one-standard-error rule (ESL, section
7.10): the *largest* span whose score exceeds the best one by less than one standard error
of the paired per-observation differences. Spans that score the same within noise are
told apart by smoothness, so a window without a bias gets the smoothest fit instead of
one that chases noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._lowess_groups import FloatArray
from ._lowess_robust import Leverage, run
from .curve import LowessCurve
from .lowess import Mode, _backend, _check_params, _prior, _problem, _vector

# What calibration_frac=auto searches: the paper's two settings (0.3, 1.0) and the range
# between the narrow spans rollouts need and the widest.
DEFAULT_SPANS: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)


@dataclass(frozen=True)
class SpanChoice:
    """The chosen span, its fitted curve, and every candidate's score.

    ``scores[i]`` is the robustness-weighted mean squared leave-one-out residual of
    ``spans[i]``; ``standard_error[i]`` that of its paired difference from the best span.
    """

    frac: float
    curve: LowessCurve
    spans: tuple[float, ...]
    scores: tuple[float, ...]
    standard_error: tuple[float, ...]


def _loo_terms(
    y: FloatArray, fit_g: FloatArray, inverse: np.ndarray, lev: Leverage
) -> tuple[FloatArray, FloatArray]:
    """Per observation: squared leave-one-out residual and its weight (0 = left out)."""
    rw = np.ones(y.size) if lev.rw is None else lev.rw
    hat = rw * lev.per_group[inverse]
    usable = (hat < 1.0 - 1e-9) & (lev.per_group[inverse] < 1.0)
    denom = np.where(usable, 1.0 - hat, 1.0)
    resid = (y - fit_g[inverse]) / denom
    return resid * resid, np.where(usable, rw, 0.0)


def choose_span(
    x: Any,
    y: Any,
    spans: Sequence[float] = DEFAULT_SPANS,
    it: int = 3,
    mode: Mode = "exact",
    *,
    weights: Any = None,
) -> SpanChoice:
    """Fit LOWESS at every span in ``spans`` and keep the one cross-validation prefers.

    Parameters
    ----------
    x, y : array_like, 1-D, equal length
        Observations; pairs with a non-finite value are dropped.
    spans : sequence of float in (0, 1]
        Candidates (at least one).
    it : int >= 0
        Robustness passes, as in :func:`rewardcal_kernels.lowess`.
    mode : {"exact", "grid"}
        As in :func:`rewardcal_kernels.lowess`; in grid mode the hat values between anchors are
        interpolated like the fits.
    weights : array_like, optional
        Prior observation weights, as in :func:`rewardcal_kernels.lowess`: they enter every
        fit and the hat values, and weight each observation's leave-one-out score (recent
        observations then choose the span of a recency-weighted curve).

    Raises
    ------
    ValueError
        On invalid arguments or when fewer than three finite pairs remain.
    """
    x_arr, y_arr = _vector(x, "x"), _vector(y, "y")
    if x_arr.size != y_arr.size:
        raise ValueError(f"x and y differ in length: {x_arr.size} != {y_arr.size}")
    candidates = sorted({float(s) for s in spans})
    if not candidates:
        raise ValueError("spans must not be empty")
    for frac in candidates:
        _check_params(frac, it, mode, "numpy")
    clean = np.isfinite(x_arr) & np.isfinite(y_arr)
    prior = _prior(weights, x_arr.size, clean)
    xc, yc = x_arr[clean], y_arr[clean]
    if xc.size < 3:
        raise ValueError("at least three finite (x, y) pairs are needed to choose a span")
    ops, _ = _backend("numpy", xc)
    curves: list[LowessCurve] = []
    sq: list[FloatArray] = []
    weight = np.ones(xc.size)
    for frac in candidates:
        # compiled: the same window sums (and so the same fit) as lowess_curve at that
        # span; the hat values come from them (LocalFits.leverage) whichever kernel sums.
        problem, groups = _problem(xc, yc, frac, it, mode, False, compiled=True, prior=prior)
        fit_g, lev = run(ops, problem, None, leverage=True)
        e2, w = _loo_terms(yc, fit_g, groups.inverse, lev)
        curves.append(LowessCurve(xs=groups.xs, ys=fit_g))
        sq.append(e2)
        # An observation counts for every span only if every span can score it.
        weight = np.minimum(weight, w)
    total = float(weight.sum())
    if total <= 0.0:
        best = len(candidates) - 1
        return SpanChoice(
            candidates[best],
            curves[best],
            tuple(candidates),
            tuple(np.nan for _ in candidates),
            tuple(np.nan for _ in candidates),
        )
    share = weight / total
    scores = np.array([float(np.dot(share, e2)) for e2 in sq])
    best = int(np.argmin(scores))
    errors = []
    for e2 in sq:
        diff = e2 - sq[best]
        mean = float(np.dot(share, diff))
        var = float(np.dot(share, (diff - mean) ** 2))
        # Effective sample size of the weighted mean (Kish): sum(w)^2 / sum(w^2).
        n_eff = total * total / float(np.dot(weight, weight))
        errors.append(np.sqrt(var / max(n_eff, 1.0)))
    chosen = max(i for i in range(len(candidates)) if scores[i] - scores[best] <= errors[i])
    return SpanChoice(
        candidates[chosen],
        curves[chosen],
        tuple(candidates),
        tuple(float(s) for s in scores),
        tuple(float(e) for e in errors),
    )
