"""rewardcal_kernels.choose_span: leave-one-out cross-validation of the LOWESS span."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_data import make_data

import rewardcal_kernels._lowess_numba as lowess_numba
from rewardcal_kernels import DEFAULT_SPANS, choose_span, lowess, lowess_curve
from rewardcal_kernels._lowess_numpy import NumpyOps
from rewardcal_kernels._lowess_robust import run
from rewardcal_kernels.lowess import _problem


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("kind", ["lengths", "continuous"])
@pytest.mark.parametrize("frac", [0.2, 1.0])
def test_hat_values_are_the_smoother_diagonal(kind: str, frac: float, compiled: bool) -> None:
    """Without robustness passes LOWESS is linear in y: H_ii = d fit_i / d y_i, whichever
    kernel (numba or numpy) forms the window sums the hat values come from."""
    x, y = make_data(kind, 400, seed=5)
    problem, groups = _problem(x, y, frac, 0, "exact", False, compiled)
    assert (problem.moments is lowess_numba.numba_moments) == compiled
    _, lev = run(NumpyOps(), problem, None, leverage=True)
    assert lev.rw is None
    base = lowess(x, y, frac, 0)
    for i in (0, 17, 123, 399):
        bumped = y.copy()
        bumped[i] += 1.0
        derivative = lowess(x, bumped, frac, 0)[i] - base[i]
        assert lev.per_group[groups.inverse[i]] == pytest.approx(derivative, abs=1e-9)


def _window(bias: str, n: int = 16_384, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Response lengths (log-normal, ties) and rewards with a known bias plus t(4) noise."""
    rng = np.random.default_rng(seed)
    x = np.round(np.exp(rng.normal(np.log(700.0), 0.6, n)))
    z = (x - np.median(x)) / np.std(x)
    b = {
        "none": np.zeros(n),
        "linear": 0.5 * z,
        "saturating": np.tanh(2.0 * z),
        "step": np.where(x > 900, 1.0, 0.0),
    }[bias]
    return x, b + 0.7 * rng.standard_t(4, n)


@pytest.mark.parametrize(
    ("bias", "low", "high"),
    [
        # No bias or a straight line: every span fits it, the smoothest is right.
        ("none", 1.0, 1.0),
        ("linear", 0.7, 1.0),
        # A curve that bends and flattens: a middle span; a full span flattens the bend.
        ("saturating", 0.2, 0.5),
        # A jump: as local as the grid goes.
        ("step", 0.05, 0.1),
    ],
)
def test_chosen_span_follows_the_shape_of_the_bias(bias: str, low: float, high: float) -> None:
    x, y = _window(bias)
    choice = choose_span(x, y)
    assert low <= choice.frac <= high, (choice.frac, choice.scores)
    assert choice.spans == tuple(sorted(DEFAULT_SPANS))
    # The returned curve is the fit at the chosen span (statsmodels' answer, see the
    # exact tests): the very curve a fixed-span refit at that span publishes.
    fixed = lowess_curve(x, y, choice.frac, 3)
    np.testing.assert_array_equal(choice.curve.xs, fixed.xs)
    np.testing.assert_array_equal(choice.curve.ys, fixed.ys)


def test_compiled_and_numpy_sums_score_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """choose_span sums windows with the numba kernel when it can (as lowess does); the
    numpy path it falls back to gives the same scores to rounding and the same choice."""
    x, y = _window("saturating", n=4000, seed=7)
    compiled = choose_span(x, y)
    monkeypatch.setattr(lowess_numba, "available", lambda: False)
    numpy_path = choose_span(x, y)
    assert compiled.frac == numpy_path.frac
    np.testing.assert_allclose(compiled.scores, numpy_path.scores, rtol=1e-9)
    np.testing.assert_allclose(compiled.standard_error, numpy_path.standard_error, rtol=1e-6)
    np.testing.assert_allclose(compiled.curve.ys, numpy_path.curve.ys, rtol=0, atol=1e-11)


def test_one_standard_error_rule_prefers_the_smoother_of_equal_spans() -> None:
    x, y = _window("none", n=4000, seed=3)
    choice = choose_span(x, y, spans=(0.3, 1.0))
    best = int(np.argmin(choice.scores))
    assert choice.frac == 1.0
    assert choice.scores[1] - choice.scores[best] <= choice.standard_error[1]


def test_invalid_spans_are_refused() -> None:
    x, y = _window("none", n=100)
    with pytest.raises(ValueError, match="frac"):
        choose_span(x, y, spans=(0.0, 0.5))
    with pytest.raises(ValueError, match="empty"):
        choose_span(x, y, spans=())
    with pytest.raises(ValueError, match="three"):
        choose_span(x[:2], y[:2])
