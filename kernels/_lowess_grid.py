"""Anchor choice for ``mode="grid"``: fit at a few hundred distinct x values, interpolate.

Notes
-----
Anchors are snapped to distinct x values, so every anchor's fit is the exact LOWESS fit
there and only the values between anchors are interpolated (linearly, as statsmodels does
between its ``delta`` anchors). Half the anchors are evenly spaced in x, half at evenly
spaced ranks: LOWESS windows are rank based, so the fit bends on the scale of its radius,
which is short where the data are dense (most response lengths) and long in the sparse
tail; rank-spaced anchors follow the first, x-spaced anchors bound the gaps in the second.

The values on both sides of the middle of the x range are anchors too: with ``frac=1``
the radius switches there from ``max(x) - u`` to ``u - min(x)``, which leaves a corner
in the fitted curve that no interpolation would follow.
"""

from __future__ import annotations

import numpy as np

from ._lowess_groups import Groups, IntArray

# Anchors of a grid fit: deviations from the exact fit stay below statsmodels' with
# delta = 1% of the range (tests/kernels/test_kernels_lowess_grid.py), while a fit costs a
# few hundred local regressions whatever the window size.
GRID_SIZE = 512


def grid_anchor_groups(groups: Groups, size: int) -> IntArray:
    """About ``size`` anchor groups (all groups when there are at most ``size``)."""
    xs = groups.xs
    n_groups = xs.size
    if n_groups <= size:
        return np.arange(n_groups, dtype=np.int64)
    n_rank = size // 2
    targets = np.linspace(xs[0], xs[-1], size - n_rank)
    right = np.clip(np.searchsorted(xs, targets), 1, n_groups - 1)
    nearest = np.where(targets - xs[right - 1] <= xs[right] - targets, right - 1, right)
    ranks = np.linspace(0, groups.n - 1, n_rank).round().astype(np.int64)
    by_rank = groups.group_of_position(ranks)
    middle = int(np.searchsorted(xs, 0.5 * (xs[0] + xs[-1])))
    fixed = np.array([0, n_groups - 1, middle - 1, middle], dtype=np.int64)
    return np.unique(np.concatenate([fixed, nearest, by_rank])).astype(np.int64)
