"""RC-Mean and the length penalty against direct transcriptions of the paper."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_data import make_data

from rewardcal_kernels import rc_mean, rc_mean_radius


def rc_mean_reference(
    x: np.ndarray, y: np.ndarray, d: float, min_neighbors: int, x_eval: np.ndarray
) -> np.ndarray:
    """O(n^2): mean reward of the samples with c in [c_e - d, c_e + d] (Huang et al. 2024)."""
    keep = np.isfinite(x) & np.isfinite(y)
    xs, ys = x[keep], y[keep]
    out = np.full(x_eval.size, np.nan)
    for i, c in enumerate(x_eval):
        inside = (xs >= c - d) & (xs <= c + d)
        if np.isfinite(c) and inside.sum() >= min_neighbors:
            out[i] = ys[inside].mean()
    return out


@pytest.mark.parametrize("min_neighbors", [1, 20, 200])
@pytest.mark.parametrize("d", [0.0, 3.0, 57.5, 400.0])
@pytest.mark.parametrize("kind", ["lengths", "heavy_ties", "continuous"])
def test_rc_mean_matches_definition(kind: str, d: float, min_neighbors: int) -> None:
    x, y = make_data(kind, 1500, seed=51)
    got = rc_mean(x, y, d, min_neighbors)
    ref = rc_mean_reference(x, y, d, min_neighbors, x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_rc_mean_window_is_closed_at_both_ends() -> None:
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    y = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    np.testing.assert_array_equal(rc_mean(x, y, 1.0, 1), [15.0, 20.0, 30.0, 40.0, 45.0])
    np.testing.assert_array_equal(rc_mean(x, y, 1.0, 3), [np.nan, 20.0, 30.0, 40.0, np.nan])


def test_rc_mean_x_eval_and_non_finite() -> None:
    x, y = make_data("lengths", 2000, seed=52)
    y[[1, 2]] = [np.nan, np.inf]
    x[3] = np.nan
    x_eval = np.array([100.0, 700.0, 701.5, np.nan, 1e6])
    got = rc_mean(x, y, 50.0, 20, x_eval=x_eval)
    np.testing.assert_allclose(got, rc_mean_reference(x, y, 50.0, 20, x_eval), rtol=1e-10)
    assert np.isnan(got[[3, 4]]).all()
    assert np.isnan(rc_mean(x, y, 50.0, 1)[3])  # no x: no window


def test_rc_mean_large_n_is_accurate() -> None:
    rng = np.random.default_rng(53)
    x = np.round(rng.uniform(0, 5000, 200_000))
    y = 1000.0 + rng.normal(size=x.size)  # rewards far from 0: prefix sums are centred
    got = rc_mean(x, y, 25.0, 20, x_eval=x[:300])
    ref = rc_mean_reference(x, y, 25.0, 20, x[:300])
    np.testing.assert_allclose(got, ref, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"d": -1.0}, "d must"),
        ({"d": np.nan}, "d must"),
        ({"min_neighbors": 0}, "min_neighbors"),
        ({"min_neighbors": 2.5}, "min_neighbors"),
        ({"y": np.ones(3)}, "differ in length"),
        ({"x_eval": np.ones((2, 2))}, "x_eval must be 1-D"),
    ],
)
def test_rc_mean_validation(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"x": np.arange(4.0), "y": np.arange(4.0), "d": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        rc_mean(**args)  # type: ignore[arg-type]


def test_rc_mean_radius_is_mean_gap_over_ratio() -> None:
    chosen = np.array([100.0, 250.0, 40.0, 900.0])
    rejected = np.array([120.0, 100.0, 40.0, 300.0])
    expected = np.mean([20.0, 150.0, 0.0, 600.0]) / 4.0
    assert rc_mean_radius(chosen, rejected) == pytest.approx(expected, rel=1e-15)
    assert rc_mean_radius(chosen, rejected, ratio=2.0) == pytest.approx(2 * expected)


@pytest.mark.parametrize(
    "chosen, rejected, ratio, message",
    [
        ([1.0, 2.0], [1.0], 4.0, "differ in length"),
        ([], [], 4.0, "at least one"),
        ([1.0, np.nan], [1.0, 2.0], 4.0, "finite"),
        ([1.0], [2.0], 0.0, "ratio"),
    ],
)
def test_rc_mean_radius_validation(
    chosen: list[float], rejected: list[float], ratio: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        rc_mean_radius(chosen, rejected, ratio)
