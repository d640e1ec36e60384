"""Tie aggregation and statsmodels' neighbourhood rule, on the host in numpy.

Everything here depends on x only, so it is computed once per fit and shared by every
robustness pass and by every backend.

Notes
-----
statsmodels (``_smoothers_lowess.pyx``, 0.15.0) fits an anchor ``u`` over the ``k`` sorted
observations ``[l, l + k)`` where ``l`` is the first index with
``x[l] + x[l + k] >= 2 u`` (capped at ``n - k``) and the radius is
``max(u - x[l], x[l + k - 1] - u)``. When the window splits a run of tied x values, the
split value lies at distance exactly ``radius`` and gets tricube weight 0, so a window can
be described by whole distinct values ("groups") ``lo..hi`` without changing the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Integer-valued x (lengths) are grouped with a bincount instead of a sort when their
# range is at most this many times the number of observations (memory stays O(n)).
_BINCOUNT_RANGE_FACTOR = 4
_BINCOUNT_MIN_RANGE = 1 << 16


@dataclass(frozen=True)
class Groups:
    """Distinct x values of clean (finite) data.

    Attributes
    ----------
    xs : (G,) float64, strictly increasing distinct values.
    inverse : (n,) int64, group of each observation (input order).
    counts : (G,) int64, observations per group.
    end : (G,) int64, ``cumsum(counts)``: group ``g`` holds sorted positions
        ``[end[g] - counts[g], end[g])``.
    """

    xs: FloatArray
    inverse: IntArray
    counts: IntArray
    end: IntArray

    @property
    def n(self) -> int:
        return int(self.end[-1]) if self.end.size else 0

    @property
    def start(self) -> IntArray:
        return self.end - self.counts

    def group_of_position(self, pos: IntArray) -> IntArray:
        """Group holding each sorted position ``pos``."""
        return np.searchsorted(self.end, pos, side="right").astype(np.int64)


def group_ties(x: FloatArray) -> Groups:
    """Aggregate tied values of finite ``x`` (any order).

    Integer-valued x with a modest range (character or token lengths) take an O(n)
    bincount path; anything else uses ``np.unique`` (a sort).
    """
    n = x.size
    lo, hi = float(x.min()), float(x.max())
    span = hi - lo
    if span <= max(_BINCOUNT_RANGE_FACTOR * n, _BINCOUNT_MIN_RANGE) and np.array_equal(
        x, np.floor(x)
    ):
        offsets = (x - lo).astype(np.int64)
        full = np.bincount(offsets, minlength=int(span) + 1)
        present = np.flatnonzero(full)
        rank = np.cumsum(full > 0) - 1
        inverse = rank[offsets].astype(np.int64, copy=False)
        xs = lo + present.astype(np.float64)
        counts = full[present].astype(np.int64)
    else:
        xs, inv, cnt = np.unique(x, return_inverse=True, return_counts=True)
        inverse = inv.astype(np.int64).reshape(-1)
        counts = cnt.astype(np.int64)
        xs = xs.astype(np.float64)
    return Groups(xs=xs, inverse=inverse, counts=counts, end=np.cumsum(counts))


def neighbours(n: int, frac: float) -> int:
    """statsmodels' window size: ``int(frac * n + 1e-10)`` clipped to ``[2, n]``."""
    k = int(frac * n + 1e-10)
    return min(max(k, 2), n)


@dataclass(frozen=True)
class Windows:
    """Neighbourhood of each anchor, in groups (see module notes).

    Attributes
    ----------
    u : (M,) anchor positions.
    lo, hi : (M,) first and last group of the window (inclusive).
    mid : (M,) first group with ``xs > u`` (start of the right half).
    radius : (M,) statsmodels' radius.
    inner_lo, inner_hi : groups ``[inner_lo, inner_hi)`` strictly inside the radius (by a
        relative margin of 1e-9), clipped to the window: an upper bound on the observations
        statsmodels counts as having positive weight.
    core_lo, core_hi : groups within ``0.99 * radius``: their tricube weight exceeds 2.6e-5,
        a lower bound for the same count.
    """

    u: FloatArray
    lo: IntArray
    hi: IntArray
    mid: IntArray
    radius: FloatArray
    inner_lo: IntArray
    inner_hi: IntArray
    core_lo: IntArray
    core_hi: IntArray

    @property
    def width(self) -> IntArray:
        return self.hi - self.lo + 1


def _first_positions(groups: Groups, k: int, two_u: FloatArray) -> IntArray:
    """First sorted position ``l`` with ``x[l] + x[l + k] >= 2u``, capped at ``n - k``."""
    n = groups.n
    if n <= k:
        return np.zeros(two_u.size, dtype=np.int64)
    if two_u.size * 64 >= n:
        x_sorted = np.repeat(groups.xs, groups.counts)
        pair = x_sorted[: n - k] + x_sorted[k:]
        return np.searchsorted(pair, two_u, side="left").astype(np.int64)
    # Few anchors (grid mode on a big window): binary search over positions, reading
    # sorted x through the group ends instead of materializing it.
    left = np.zeros(two_u.size, dtype=np.int64)
    right = np.full(two_u.size, n - k, dtype=np.int64)
    xs = groups.xs
    while True:
        active = left < right
        if not active.any():
            return left
        mid = np.minimum((left + right) // 2, n - k - 1)
        pair = xs[groups.group_of_position(mid)] + xs[groups.group_of_position(mid + k)]
        go_right = active & (pair < two_u)
        left = np.where(go_right, mid + 1, left)
        right = np.where(active & ~go_right, mid, right)


def windows(groups: Groups, k: int, u: FloatArray) -> Windows:
    """statsmodels' neighbourhoods of ``k`` observations for sorted anchors ``u``."""
    xs = groups.xs
    first = _first_positions(groups, k, 2.0 * u)
    lo = groups.group_of_position(first)
    hi = groups.group_of_position(first + (k - 1))
    radius = np.maximum(u - xs[lo], xs[hi] - u)
    mid = np.searchsorted(xs, u, side="right").astype(np.int64)
    shrunk = radius * (1.0 - 1e-9)
    inner_lo = np.maximum(np.searchsorted(xs, u - shrunk, side="right"), lo)
    inner_hi = np.minimum(np.searchsorted(xs, u + shrunk, side="left"), hi + 1)
    core = 0.99 * radius
    core_lo = np.maximum(np.searchsorted(xs, u - core, side="left"), lo)
    core_hi = np.minimum(np.searchsorted(xs, u + core, side="right"), hi + 1)
    return Windows(
        u=u,
        lo=lo,
        hi=hi,
        mid=mid,
        radius=radius,
        inner_lo=inner_lo.astype(np.int64),
        inner_hi=np.maximum(inner_hi, inner_lo).astype(np.int64),
        core_lo=core_lo.astype(np.int64),
        core_hi=np.maximum(core_hi, core_lo).astype(np.int64),
    )
