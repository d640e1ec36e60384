"""rewardcal_kernels.lowess(mode="exact") against statsmodels 0.15.0, with explicit tolerances.

Every test runs twice: with the compiled window sums (numba, the numpy backend's default
where numba is installed) and with the numpy prefix-sum path (the fallback without numba).
"""

from __future__ import annotations

import numpy as np
import pytest
from kernel_data import KINDS, assert_close, make_data, sm_lowess

import rewardcal_kernels._lowess_fit as lowess_fit
import rewardcal_kernels._lowess_numba as lowess_numba
import rewardcal_kernels._lowess_robust as lowess_robust
from rewardcal_kernels import lowess

# statsmodels with delta=0 is O(n * k): keep the big sizes to the frac values that matter.
SIZES = (7, 60, 500, 3000)
FRACS = (0.1, 0.2, 0.3, 0.5, 1.0)


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which implementation of the window sums the numpy backend uses."""
    if request.param == "compiled":
        assert lowess_numba.available(), "numba is a pinned dependency"
    else:
        monkeypatch.setattr(lowess_numba, "available", lambda: False)
    return str(request.param)


@pytest.mark.parametrize("it", [0, 3])
@pytest.mark.parametrize("frac", FRACS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_matches_statsmodels(kind: str, n: int, frac: float, it: int) -> None:
    x, y = make_data(kind, n, seed=n)
    assert_close(lowess(x, y, frac, it), sm_lowess(x, y, frac, it), y)


@pytest.fixture(scope="module")
def lengths_50k() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The benchmark's case: 50k integer lengths, frac=1.0 (statsmodels takes ~10 s)."""
    x, y = make_data("lengths", 50_000, seed=50)
    return x, y, sm_lowess(x, y, 1.0, 3)


def test_matches_statsmodels_50k_lengths(lengths_50k: tuple[np.ndarray, ...]) -> None:
    x, y, ref = lengths_50k
    assert np.unique(x).size < 5000  # heavy ties: the aggregated path is what is tested
    assert_close(lowess(x, y, 1.0, 3), ref, y, rel=1e-12)


@pytest.mark.parametrize("frac", FRACS)
@pytest.mark.parametrize("kind", ["lengths", "length_diff"])
def test_matches_statsmodels_12k_every_span(kind: str, frac: float) -> None:
    """The spans people use, on tie-heavy lengths (~1,500 distinct) and near-continuous
    length differences (~3,000 distinct): dozens of chunks of prefix sums per fit."""
    x, y = make_data(kind, 12_000, seed=12)
    assert_close(lowess(x, y, frac, 3), sm_lowess(x, y, frac, 3), y)


def test_result_follows_input_order() -> None:
    x, y = make_data("lengths", 800, seed=3)
    perm = np.random.default_rng(1).permutation(x.size)
    # Same fits; only the order of the per-value sums (and so the rounding) differs.
    assert_close(lowess(x[perm], y[perm], 0.3), lowess(x, y, 0.3)[perm], y, rel=1e-12)


@pytest.mark.parametrize("frac", [0.02, 0.05, 0.3])
def test_zero_radius_windows_keep_statsmodels_fallback(frac: float) -> None:
    """Windows inside one run of ties have radius 0: statsmodels keeps the y of the first
    tied observation in its sort order for the whole run."""
    x, y = make_data("heavy_ties", 3000, seed=7)
    ref = sm_lowess(x, y, frac, 3)
    if frac < 0.1:
        assert np.isin(ref, y).sum() > 100  # the fallback really happens here
    assert_close(lowess(x, y, frac, 3), ref, y)


def test_windows_of_two_points_fall_back_to_y() -> None:
    x, y = make_data("continuous", 200, seed=11)
    ref = sm_lowess(x, y, 0.005, 3)  # k = 2: one point at the radius, weight 0
    np.testing.assert_array_equal(ref, y)
    assert_close(lowess(x, y, 0.005, 3), ref, y)


def test_neighbour_just_inside_radius_is_counted_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A point at 0.995 radius has tricube weight ~3e-6 (> 1e-12): the per-group bounds
    cannot decide, so the observation-level count must run and agree with statsmodels."""
    calls = []
    original = lowess_fit.tricube_count

    def counting(*args: object) -> int:
        calls.append(args)
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(lowess_robust, "tricube_count", counting)
    x = np.array([0.0, 1.0, 1.995, 3.5, 3.6, 7.0, 7.004, 9.0])
    y = np.array([1.0, -2.0, 0.5, 3.0, -1.0, 2.0, 0.0, 4.0])
    for frac in (0.3, 0.4):
        assert_close(lowess(x, y, frac, 3), sm_lowess(x, y, frac, 3), y)
    assert calls


@pytest.mark.parametrize(
    "x, y",
    [
        (np.full(40, 3.0), np.linspace(-1.0, 1.0, 40)),  # one distinct x
        (np.array([2.0]), np.array([5.0])),
        (np.array([1.0, 2.0]), np.array([5.0, -1.0])),
        (np.array([1.0, 2.0, 4.0]), np.array([5.0, -1.0, 0.5])),
        (np.linspace(0.0, 1.0, 300), np.full(300, 2.5)),  # constant y
        (np.linspace(0.0, 1.0, 300), 3.0 * np.linspace(0.0, 1.0, 300) + 1.0),  # a line
        (1e6 + np.linspace(0.0, 1.0, 300), np.cos(np.arange(300.0))),  # x far from 0
    ],
)
@pytest.mark.parametrize("frac", [0.3, 1.0])
def test_degenerate_inputs(x: np.ndarray, y: np.ndarray, frac: float) -> None:
    assert_close(lowess(x, y, frac, 3), sm_lowess(x, y, frac, 3), y)


def test_outliers_are_downweighted_like_statsmodels() -> None:
    x, y = make_data("continuous", 400, seed=5)
    y[::13] += 40.0
    got = lowess(x, y, 0.3, 3)
    assert_close(got, sm_lowess(x, y, 0.3, 3), y)
    assert np.max(np.abs(got - np.sin(x))) < 2.0  # the robust passes did their job


def test_non_finite_pairs_are_dropped() -> None:
    x, y = make_data("lengths", 500, seed=2)
    x[[3, 50]] = np.nan
    y[[7, 8]] = [np.nan, np.inf]
    x[9] = -np.inf
    got = lowess(x, y, 0.4, 3)
    assert np.isnan(got[[3, 50, 7, 8, 9]]).all()
    assert np.isfinite(np.delete(got, [3, 50, 7, 8, 9])).all()
    assert_close(got, sm_lowess(x, y, 0.4, 3), y)


def test_all_pairs_dropped_gives_nan() -> None:
    got = lowess([np.nan, 1.0], [2.0, np.nan], 0.5)
    assert got.shape == (2,) and np.isnan(got).all()


def test_accepts_lists_and_tensors() -> None:
    import torch

    x, y = make_data("lengths", 300, seed=1)
    ref = lowess(x, y, 0.5)
    np.testing.assert_array_equal(lowess(x.tolist(), y.tolist(), 0.5), ref)
    np.testing.assert_array_equal(lowess(torch.tensor(x), torch.tensor(y), 0.5), ref)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"x": np.ones((3, 2)), "y": np.ones(6)}, "x must be 1-D"),
        ({"y": np.ones((4, 1))}, "y must be 1-D"),
        ({"y": np.ones(5)}, "differ in length"),
        ({"frac": 0.0}, "frac"),
        ({"frac": 1.5}, "frac"),
        ({"frac": True}, "frac"),
        ({"it": -1}, "it must"),
        ({"it": 2.5}, "it must be an integer"),
        ({"mode": "fast"}, "mode"),
        ({"backend": "jax"}, "backend"),
        ({"x": ["a", "b", "c", "d"]}, "x must be numeric"),
    ],
)
def test_validation_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"x": np.arange(4.0), "y": np.arange(4.0)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        lowess(**args)  # type: ignore[arg-type]
