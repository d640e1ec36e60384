"""Prior observation weights (recency) in the exact LOWESS: against a direct weighted
local linear regression written here, statsmodels-style, under both engines.

The reference follows statsmodels' ``_smoothers_lowess.pyx`` step by step (neighbourhood
of ``k = int(frac * n)`` points, tricube on the distance over the radius, bisquare of the
residuals over six median absolute residuals, the 1e-12 floor on the weighted variance of
x) with each observation's prior weight multiplying its tricube x robustness weight.
"""

from __future__ import annotations

import numpy as np
import pytest
from kernel_data import assert_close, make_data, sm_lowess

import rewardcal_kernels._lowess_numba as lowess_numba
from rewardcal_kernels import choose_span, lowess, lowess_curve

FloatArray = np.ndarray


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "compiled":
        assert lowess_numba.available(), "numba is a pinned dependency"
    else:
        monkeypatch.setattr(lowess_numba, "available", lambda: False)
    return str(request.param)


def weighted_reference(
    x: FloatArray, y: FloatArray, prior: FloatArray, frac: float, it: int
) -> FloatArray:
    """Weighted LOWESS, one local regression per observation, in input order."""
    order = np.argsort(x, kind="stable")
    xs, ys, ps = x[order], y[order], prior[order]
    n = xs.size
    k = min(max(int(frac * n + 1e-10), 2), n)
    rw = np.ones(n)
    fit = np.empty(n)
    for _ in range(it + 1):
        for i in range(n):
            u = xs[i]
            # statsmodels' neighbourhood: first l with x[l] + x[l + k] >= 2u, capped.
            left = 0
            while left < n - k and xs[left] + xs[left + k] < 2.0 * u:
                left += 1
            radius = max(u - xs[left], xs[left + k - 1] - u)
            d = np.abs(xs - u) / radius
            tricube = np.where(d < 1.0, (1.0 - d**3) ** 3, 0.0)
            w = tricube * rw
            assert np.count_nonzero(w > 1e-12) >= 2, "the data avoid statsmodels' fallback"
            w = w * ps
            xbar = np.sum(w * xs) / np.sum(w)
            ybar = np.sum(w * ys) / np.sum(w)
            var = np.sum(w * (xs - xbar) ** 2) / np.sum(w)
            cov = np.sum(w * (xs - xbar) * (ys - ybar)) / np.sum(w)
            fit[i] = ybar + (u - xbar) * cov / max(var, 1e-12)
        resid = np.abs(ys - fit)
        scale = 6.0 * np.median(resid)
        rw = np.clip(1.0 - (resid / scale) ** 2, 0.0, None) ** 2
    out = np.empty(n)
    out[order] = fit
    return out


def recency(n: int, half_life: float) -> FloatArray:
    """Observation i of n (oldest first) weighs 0.5 ** (age / half_life)."""
    age = np.arange(n - 1, -1, -1, dtype=np.float64)
    return 0.5 ** (age / half_life)


@pytest.mark.parametrize("it", [0, 3])
@pytest.mark.parametrize("frac", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("kind", ["continuous", "lengths", "heavy_ties"])
def test_matches_weighted_reference(kind: str, frac: float, it: int) -> None:
    x, y = make_data(kind, 300, seed=7)
    prior = recency(x.size, half_life=60.0)
    got = lowess(x, y, frac, it, weights=prior)
    assert_close(got, weighted_reference(x, y, prior, frac, it), y)


def test_random_weights_and_curve_match_reference() -> None:
    x, y = make_data("lengths", 400, seed=3)
    prior = np.random.default_rng(1).uniform(0.01, 5.0, x.size)
    want = weighted_reference(x, y, prior, 0.3, 3)
    assert_close(lowess(x, y, 0.3, 3, weights=prior), want, y)
    curve = lowess_curve(x, y, 0.3, 3, weights=prior)
    assert_close(curve(x), want, y)


def test_equal_weights_are_statsmodels() -> None:
    x, y = make_data("lengths", 500, seed=2)
    assert_close(lowess(x, y, 0.3, 3, weights=np.full(x.size, 3.5)), sm_lowess(x, y, 0.3, 3), y)


def test_recency_follows_a_drifting_bias() -> None:
    """Old observations pay +1 per 100 characters, recent ones -1: with a short half-life
    the curve follows the recent slope, unweighted it averages both away."""
    rng = np.random.default_rng(0)
    n = 2000
    x = rng.integers(50, 400, n).astype(np.float64)
    slope = np.where(np.arange(n) < n // 2, 0.01, -0.01)
    y = slope * x + rng.normal(0.0, 0.2, n)
    grid = np.array([100.0, 300.0])
    flat = lowess_curve(x, y, 0.3, 3)(grid)
    recent = lowess_curve(x, y, 0.3, 3, weights=recency(n, 100.0))(grid)
    assert abs(flat[1] - flat[0]) < 0.5
    assert recent[1] - recent[0] == pytest.approx(-2.0, abs=0.3)


def test_weighted_span_choice_uses_the_weights() -> None:
    x, y = make_data("lengths", 600, seed=4)
    prior = recency(x.size, 150.0)
    choice = choose_span(x, y, spans=(0.3,), weights=prior)
    assert_close(choice.curve(x), weighted_reference(x, y, prior, 0.3, 3), y)


@pytest.mark.parametrize(
    "weights", [np.zeros(10), -np.ones(10), np.full(10, np.nan), np.ones(9), np.ones((10, 1))]
)
def test_invalid_weights_are_refused(weights: FloatArray) -> None:
    x, y = make_data("continuous", 10, seed=0)
    with pytest.raises(ValueError, match="weights"):
        lowess(x, y, 0.5, weights=weights)


def test_weights_of_dropped_pairs_are_ignored() -> None:
    x, y = make_data("continuous", 60, seed=5)
    x[3], y[8] = np.nan, np.inf
    prior = recency(x.size, 20.0)
    prior[3] = prior[8] = np.nan
    got = lowess(x, y, 0.5, 3, weights=prior)
    keep = np.isfinite(x) & np.isfinite(y)
    assert np.isnan(got[~keep]).all()
    assert_close(got[keep], weighted_reference(x[keep], y[keep], prior[keep], 0.5, 3), y[keep])
