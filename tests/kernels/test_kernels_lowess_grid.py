"""lowess(mode="grid"): fits at about GRID_SIZE distinct x values, linear in between."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_data import assert_close, make_data, sm_lowess

from rewardcal_kernels import lowess, lowess_curve
from rewardcal_kernels._lowess_grid import GRID_SIZE, grid_anchor_groups
from rewardcal_kernels._lowess_groups import group_ties


@pytest.mark.parametrize("frac", [0.1, 0.3, 1.0])
def test_grid_beats_statsmodels_delta_on_lengths(frac: float) -> None:
    """At the default grid the deviation from the exact fit is below statsmodels' with
    delta = 1% of the x range (the speed-up it recommends)."""
    x, y = make_data("lengths", 20_000, seed=21)
    exact = lowess(x, y, frac, 3)
    grid_dev = np.max(np.abs(lowess(x, y, frac, 3, mode="grid") - exact))
    sm_dev = np.max(np.abs(sm_lowess(x, y, frac, 3, delta=0.01 * np.ptp(x)) - exact))
    assert grid_dev <= sm_dev
    assert grid_dev <= 1e-3 * np.ptp(y)


def test_grid_is_exact_when_every_value_is_an_anchor() -> None:
    x, y = make_data("lengths", 600, seed=23)
    assert np.unique(x).size <= GRID_SIZE
    got = lowess(x, y, 0.3, 3, mode="grid")
    assert_close(got, sm_lowess(x, y, 0.3, 3), y)


def test_grid_anchors_hold_exact_fits_without_robust_passes() -> None:
    """With it=0 the fit at an anchor value is the exact LOWESS fit there."""
    x, y = make_data("lengths", 4000, seed=24)  # 1,534 distinct x
    groups = group_ties(x)
    anchors = groups.xs[grid_anchor_groups(groups, GRID_SIZE)]
    at_anchor = np.isin(x, anchors)
    got = lowess(x, y, 0.3, 0, mode="grid")
    ref = sm_lowess(x, y, 0.3, 0)
    assert_close(got[at_anchor], ref[at_anchor], y)
    assert not np.allclose(got[~at_anchor], ref[~at_anchor], rtol=0, atol=1e-12)


def test_grid_anchors_cover_ends_ranks_and_range() -> None:
    x, _ = make_data("lengths", 10_000, seed=25)
    groups = group_ties(x)
    idx = grid_anchor_groups(groups, 100)
    xs = groups.xs
    assert idx[0] == 0 and idx[-1] == xs.size - 1
    assert np.all(np.diff(idx) > 0) and 50 <= idx.size <= 104
    # half the anchors: the distinct values nearest to evenly spaced targets ...
    for target in np.linspace(xs[0], xs[-1], 50):
        assert np.min(np.abs(xs[idx] - target)) == np.min(np.abs(xs - target))
    # ... half at evenly spaced ranks (at most n/49 observations between two anchors)
    assert np.max(np.diff(groups.end[idx])) <= x.size / 49 + groups.counts.max()
    # both sides of the middle of the range, where frac=1 fits have a corner
    middle = np.searchsorted(xs, 0.5 * (xs[0] + xs[-1]))
    assert {middle - 1, middle} <= set(idx.tolist())


def test_grid_curve_interpolates_between_anchors() -> None:
    x, y = make_data("lengths", 6000, seed=26)  # 1,768 distinct x
    curve = lowess_curve(x, y, 0.3, 3, mode="grid")
    np.testing.assert_array_equal(curve.xs, np.unique(x))
    assert_close(curve(x), lowess(x, y, 0.3, 3, mode="grid"), y, rel=1e-12)
