"""How the window sums of each anchor are formed: direct summation or chunked prefix sums.

Notes
-----
A local linear fit at anchor ``u`` needs five tricube-weighted sums over its window:
``sum w``, ``sum w s``, ``sum w s^2``, ``sum w y``, ``sum w s y`` with ``s = (x - u) / r``.

*Direct* summation costs O(window) per anchor and is the accurate choice when windows are
short (few distinct x values).

*Chunked prefix sums*: on each side of the anchor the tricube weight is a polynomial of
degree 9 in ``s`` (``(1 -+ s^3)^3``), so the sums follow from power sums
``sum a v^j`` (``j <= 11``) over the window, i.e. from differences of prefix sums: O(1) per
anchor. Prefix sums of ``x^11`` in global coordinates lose every digit when the radius is
small against the x range, so anchors are cut into chunks whose spread is at most their
smallest radius; each chunk takes prefix sums in its own coordinate
``v = (x - c) / H`` (c its centre, H its largest radius) over the union of its windows, and
every anchor converts them to its own ``s = alpha v + beta`` (``alpha = H / r``,
``|beta| <= 1/2``) with a binomial transform. All magnitudes stay within a few thousand
times the window mass (about 1e-13 relative error). The work over all chunks is a few
passes over the distinct values, whatever the radius.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._lowess_groups import IntArray, Windows

# Windows of at most this many distinct x values are summed directly.
DIRECT_MAX_WIDTH = 96
# Direct summation works on blocks of about this many (anchor, group) pairs.
DIRECT_BLOCK_ELEMENTS = 1 << 18

# Prefix-sum fits whose rounding error is amplified more than this (see
# ``_lowess_sums._chunked``) are recomputed by direct summation. Measured on log-normal
# lengths and on far extrapolation: below 100 the fit error stayed under 5e-13 of the y
# range, below 1000 under 4e-12, below 1e5 under 3e-10. Grid mode tolerates more: its
# interpolation error is about 1e-6 of the y range anyway.
EXACT_MAX_AMPLIFICATION = 300.0
GRID_MAX_AMPLIFICATION = 1e4


@dataclass(frozen=True)
class Tuning:
    """Accuracy / speed knobs of the chunked prefix sums.

    ``spread``: anchors in a chunk lie within ``spread * (smallest radius)`` of each
    other; ``ratio``: largest over smallest radius in a chunk. Rounding errors grow like
    ``(1 + spread + ratio)^11``; fewer, wider chunks mean fewer prefix passes.
    ``max_amplification``: see above.
    """

    spread: float
    ratio: float
    max_amplification: float


EXACT = Tuning(spread=1.0, ratio=1.5, max_amplification=EXACT_MAX_AMPLIFICATION)
# Grid fits carry interpolation errors of ~1e-6 of the y range: wider chunks (errors
# ~1e-11 measured) halve the per-chunk overhead that dominates with few anchors.
GRID = Tuning(spread=2.0, ratio=3.0, max_amplification=GRID_MAX_AMPLIFICATION)


@dataclass(frozen=True)
class Chunk:
    """Anchors sharing one local coordinate for their prefix sums.

    ``anchors`` index the plan's anchors; ``g0:g1`` is the union of their windows;
    ``center`` and ``scale`` define ``v = (x - center) / scale``.
    """

    anchors: IntArray
    g0: int
    g1: int
    center: float
    scale: float


@dataclass(frozen=True)
class FitPlan:
    """Windows of the anchors plus how their sums are formed (x only, reused every pass)."""

    win: Windows
    direct_blocks: tuple[tuple[IntArray, int], ...]
    chunks: tuple[Chunk, ...]
    max_amplification: float = EXACT_MAX_AMPLIFICATION

    @property
    def size(self) -> int:
        return int(self.win.u.size)


def direct_blocks(anchors: IntArray, width: IntArray) -> tuple[tuple[IntArray, int], ...]:
    """Split anchors (indices) into blocks of bounded (anchors x padded width) size."""
    blocks: list[tuple[IntArray, int]] = []
    if anchors.size == 0:
        return ()
    order = anchors[np.argsort(width[anchors], kind="stable")]
    w_sorted = width[order]
    start = 0
    while start < order.size:
        guess = min(order.size, start + max(1, DIRECT_BLOCK_ELEMENTS // int(w_sorted[start])))
        rows = max(1, DIRECT_BLOCK_ELEMENTS // int(w_sorted[guess - 1]))
        stop = min(order.size, start + rows)
        blocks.append((np.sort(order[start:stop]), int(w_sorted[stop - 1])))
        start = stop
    return tuple(blocks)


def _chunks(win: Windows, anchors: IntArray, tuning: Tuning) -> tuple[Chunk, ...]:
    """Greedy chunks of consecutive anchors: bounded spread, radii within a ratio."""
    out: list[Chunk] = []
    u, r = win.u[anchors], win.radius[anchors]
    m = anchors.size
    start = 0
    while start < m:
        reach = u[start] + tuning.spread * r[start]
        cap = max(int(np.searchsorted(u, reach, side="right")), start + 1)
        r_min = np.minimum.accumulate(r[start:cap])
        r_max = np.maximum.accumulate(r[start:cap])
        ok = (u[start:cap] - u[start] <= tuning.spread * r_min) & (r_max <= tuning.ratio * r_min)
        stop = start + (int(np.argmin(ok)) if not ok.all() else cap - start)
        stop = max(stop, start + 1)
        idx = anchors[start:stop]
        out.append(
            Chunk(
                anchors=idx,
                g0=int(win.lo[idx].min()),
                g1=int(win.hi[idx].max()) + 1,
                center=0.5 * (float(u[start]) + float(u[stop - 1])),
                scale=float(r[start:stop].max()),
            )
        )
        start = stop
    return tuple(out)


def plan_fits(win: Windows, *, direct_only: bool = False, tuning: Tuning = EXACT) -> FitPlan:
    """Choose direct summation or chunked prefix sums for every anchor."""
    all_idx = np.arange(win.u.size, dtype=np.int64)
    if direct_only:
        return FitPlan(win=win, direct_blocks=direct_blocks(all_idx, win.width), chunks=())
    # Zero radius only happens for single-group windows, which are always direct.
    wide = (win.width > DIRECT_MAX_WIDTH) & (win.radius > 0)
    return FitPlan(
        win=win,
        direct_blocks=direct_blocks(all_idx[~wide], win.width),
        chunks=_chunks(win, all_idx[wide], tuning),
        max_amplification=tuning.max_amplification,
    )
