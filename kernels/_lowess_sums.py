"""Tricube-weighted window sums of every anchor: direct summation or chunked prefix sums.

See ``_lowess_plan`` for when each is used and why the prefix sums are chunk-local.
Everything that depends on x only (window groups, tricube weights, powers of the chunk
coordinate, binomial transforms) is computed once and kept across robustness passes
within a memory budget; each pass then only multiplies in the new per-group weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Any

import numpy as np

from ._lowess_fused import FusedTerms, fused_moments, fused_terms
from ._lowess_ops import ArrayOps, Stats
from ._lowess_plan import Chunk, FitPlan, direct_blocks

_POWERS = 12  # s^0 .. s^11: degree-9 tricube times s^2
_BINOM = np.array([[comb(p, j) for j in range(_POWERS)] for p in range(_POWERS)], dtype=float)
_P_MINUS_J = np.clip(np.subtract.outer(np.arange(_POWERS), np.arange(_POWERS)), 0, None)
# x-only chunk terms are kept across robustness passes up to this many float64 values.
_CACHE_ELEMENTS = 1 << 24
# Span rows per block of chunk prefix sums: 8192 x 12 float64 stay in a 1 MiB cache.
_PREFIX_BLOCK = 8192


@dataclass(frozen=True)
class _ChunkTerms:
    """x-only parts of a chunk's window sums (reused by every robustness pass).

    Prefix sums are needed only at the window boundaries ``bounds`` (sorted prefix
    lengths in the chunk's span); they are accumulated block by block (``blocks``: span
    rows ``s0:s1``, the slice ``k0:k1`` of bounds inside, and those bounds relative to
    ``s0``) so that the temporaries stay cache-sized however long the span. ``v`` is the
    chunk coordinate of each span row, ``vpow[j, i] = v_i^j`` when it fits the budget.
    ``coef_a[side][m, q, j]`` turns power sums of ``v`` on one side of anchor ``m`` into
    ``sum a s^q tricube(s)`` (q <= 2), ``coef_b`` likewise for q <= 1 (left side first);
    ``lo``, ``mid``, ``hi1`` index ``bounds``.
    """

    v: Any
    vpow: Any | None
    n_bounds: int
    blocks: tuple[tuple[int, int, int, int, np.ndarray], ...]
    lo: Any
    mid: Any
    hi1: Any
    coef_a: tuple[Any, Any]
    coef_b: tuple[Any, Any]

    @property
    def elements(self) -> int:
        m = int(self.lo.shape[0])
        span = int(self.v.shape[0])
        return span * (_POWERS + 1 if self.vpow is not None else 1) + m * 10 * _POWERS


class DeviceWindows:
    """A :class:`FitPlan`'s per-anchor arrays, moved to the backend once."""

    def __init__(self, ops: ArrayOps, plan: FitPlan) -> None:
        w = plan.win
        self.ops = ops
        self.plan = plan
        self.size = plan.size
        self.u = ops.array(w.u)
        self.radius = ops.array(w.radius)
        self.safe_radius = ops.array(np.where(w.radius > 0, w.radius, 1.0))
        self.lo = ops.array(w.lo)
        self.hi = ops.array(w.hi)
        self.mid = ops.array(np.clip(w.mid, w.lo, w.hi + 1))
        self.inner = (ops.array(w.inner_lo), ops.array(w.inner_hi))
        self.core = (ops.array(w.core_lo), ops.array(w.core_hi))
        self.blocks = [(ops.array(idx), k) for idx, k in plan.direct_blocks]
        self.chunks = [(ops.array(c.anchors), c) for c in plan.chunks]
        self.binom = ops.array(_BINOM)
        self.p_minus_j = ops.array(_P_MINUS_J.astype(np.int64))
        self._terms: dict[int, _ChunkTerms] = {}
        self._direct: dict[int, _DirectTerms] = {}
        self._cached = 0
        self._redo: tuple[np.ndarray, list[_DirectTerms]] | None = None
        # Built on first use; numpy only (torch keeps the per-chunk path).
        self._fused: FusedTerms | None = None
        self._fused_tried = ops.xp is not np

    def fused_terms(self, xs: Any) -> FusedTerms | None:
        """All chunks' terms at once (numpy only, within a memory budget), else None."""
        if not self._fused_tried:
            self._fused_tried = True
            self._fused = fused_terms(self.plan, xs)
        return self._fused

    def _keep(self, elements: int) -> bool:
        if self._cached + elements > _CACHE_ELEMENTS:
            return False
        self._cached += elements
        return True

    def direct_terms(self, i: int, xs: Any) -> _DirectTerms:
        """x-only terms of direct block ``i``, kept while they fit in the cache budget."""
        if i in self._direct:
            return self._direct[i]
        idx, k = self.blocks[i]
        terms = _direct_terms(self, xs, idx, k)
        if self._keep(terms.elements):
            self._direct[i] = terms
        return terms

    def redo_terms(self, anchors: np.ndarray, xs: Any) -> list[_DirectTerms]:
        """Direct terms covering ``anchors`` (prefix-sum fits to recompute).

        The set barely changes between robustness passes, so the previous one is reused
        whenever it covers the new one (recomputing a few extra anchors directly is only
        more accurate).
        """
        if self._redo is not None and np.isin(anchors, self._redo[0]).all():
            return self._redo[1]
        if self._redo is not None:
            anchors = np.union1d(anchors, self._redo[0])
        terms = [
            _direct_terms(self, xs, self.ops.array(idx), k)
            for idx, k in direct_blocks(anchors, self.plan.win.width)
        ]
        if self._keep(sum(t.elements for t in terms)):
            self._redo = (anchors, terms)
        return terms

    def chunk_terms(self, i: int, xs: Any) -> _ChunkTerms:
        """x-only terms of chunk ``i``, kept while they fit in the cache budget."""
        if i in self._terms:
            return self._terms[i]
        idx, chunk = self.chunks[i]
        span = chunk.g1 - chunk.g0
        keep_powers = self._cached + span * _POWERS <= _CACHE_ELEMENTS
        terms = _chunk_terms(self, xs, idx, chunk, keep_powers)
        if self._keep(terms.elements):
            self._terms[i] = terms
        return terms


@dataclass(frozen=True)
class _DirectTerms:
    """x-only parts of direct summation for a block of anchors: window groups ``g``,
    scaled offsets ``s`` and tricube weights ``t`` (zero on padding)."""

    idx: Any
    g: Any
    s: Any
    t: Any

    @property
    def elements(self) -> int:
        return 3 * int(self.g.shape[0]) * int(self.g.shape[1])


def _direct_terms(dw: DeviceWindows, xs: Any, idx: Any, k: int) -> _DirectTerms:
    """Window groups and tricube weights of anchors ``idx`` (windows of <= k groups)."""
    xp = dw.ops.xp
    lo = dw.lo[idx][:, None]
    g = lo + dw.ops.arange(k)[None, :]
    valid = g <= dw.hi[idx][:, None]
    g = xp.where(valid, g, lo)
    s = (xs[g] - dw.u[idx][:, None]) / dw.safe_radius[idx][:, None]
    d = abs(s)
    t = 1.0 - d * d * d
    return _DirectTerms(idx=idx, g=g, s=s, t=xp.where(valid, t * t * t, 0.0))


def _direct(ops: ArrayOps, terms: _DirectTerms, a_g: Any, b_g: Any) -> Stats:
    """Window sums by direct summation (two-pass: centred variance and covariance)."""
    xp = ops.xp
    s = terms.s
    a = terms.t * a_g[terms.g]
    b = terms.t * b_g[terms.g]
    m0 = a.sum(-1)
    m0_safe = xp.where(m0 > 0, m0, 1.0)
    sbar = (a * s).sum(-1) / m0_safe
    ds = s - sbar[:, None]
    var = (a * ds * ds).sum(-1) / m0_safe
    ybar = b.sum(-1) / m0_safe
    cov = (b * ds).sum(-1) / m0_safe
    return m0, sbar, var, ybar, cov


def _powers(dw: DeviceWindows, v: Any) -> Any:
    """``out[i, j] = v[i] ** j`` for ``j < 12`` (small arrays: per-anchor factors)."""
    return dw.ops.power_rows(v, _POWERS).T


def _chunk_terms(
    dw: DeviceWindows, xs: Any, idx: Any, chunk: Chunk, keep_powers: bool
) -> _ChunkTerms:
    g0, g1 = chunk.g0, chunk.g1
    v = (xs[g0:g1] - chunk.center) / chunk.scale
    r = dw.radius[idx]
    alpha = chunk.scale / r
    beta = (chunk.center - dw.u[idx]) / r
    # t[m, p, j] = C(p, j) alpha^j beta^(p - j): power sums of v -> power sums of s
    t = dw.binom[None] * _powers(dw, alpha)[:, None, :]
    t = t * _powers(dw, beta)[:, dw.p_minus_j]

    def side(sign: float) -> Any:
        # s^q (1 + sign s^3)^3 = s^q + 3 sign s^(q+3) + 3 s^(q+6) + sign s^(q+9)
        rows = [
            t[:, q] + 3.0 * sign * t[:, q + 3] + 3.0 * t[:, q + 6] + sign * t[:, q + 9]
            for q in range(3)
        ]
        return dw.ops.xp.stack(rows, 1)

    left, right = side(1.0), side(-1.0)
    last = _POWERS - 1
    # Boundary positions (prefix length within the span) on the host, split by block.
    win, a = dw.plan.win, chunk.anchors
    mid = np.clip(win.mid[a], win.lo[a], win.hi[a] + 1)
    positions = np.concatenate([win.lo[a], mid, win.hi[a] + 1]) - g0
    bounds, where = np.unique(positions, return_inverse=True)
    span = g1 - g0
    blocks = []
    for s0 in range(0, span, _PREFIX_BLOCK):
        s1 = min(s0 + _PREFIX_BLOCK, span)
        k0, k1 = np.searchsorted(bounds, [s0 + 1, s1 + 1])
        blocks.append((s0, s1, int(k0), int(k1), bounds[k0:k1] - s0))
    m = a.size
    return _ChunkTerms(
        v=v,
        vpow=dw.ops.power_rows(v, _POWERS) if keep_powers else None,
        n_bounds=int(bounds.size),
        blocks=tuple(blocks),
        lo=dw.ops.array(where[:m]),
        mid=dw.ops.array(where[m : 2 * m]),
        hi1=dw.ops.array(where[2 * m :]),
        coef_a=(left, right),
        coef_b=(left[:, :2, :last], right[:, :2, :last]),
    )


def _prefix_at_bounds(
    ops: ArrayOps, dw: DeviceWindows, a_g: Any, b_g: Any, terms: _ChunkTerms, g0: int
) -> tuple[Any, Any]:
    """Prefix sums of ``a v^j`` (j < 12) and ``b v^j`` (j < 11) at the window bounds,
    as ``(12, bounds)`` and ``(11, bounds)``."""
    last = _POWERS - 1
    pa = ops.zeros((_POWERS, terms.n_bounds))
    pb = ops.zeros((last, terms.n_bounds))
    carry_a = ops.zeros((_POWERS, 1))
    carry_b = ops.zeros((last, 1))
    for s0, s1, k0, k1, rel in terms.blocks:
        if terms.vpow is not None:
            vpow = terms.vpow[:, s0:s1]
        else:
            vpow = ops.power_rows(terms.v[s0:s1], _POWERS)
        at_a, total_a = ops.prefix_at(a_g[None, g0 + s0 : g0 + s1] * vpow, rel)
        at_b, total_b = ops.prefix_at(b_g[None, g0 + s0 : g0 + s1] * vpow[:last], rel)
        if k1 > k0:
            pa[:, k0:k1] = carry_a + at_a
            pb[:, k0:k1] = carry_b + at_b
        carry_a = carry_a + total_a
        carry_b = carry_b + total_b
    return pa, pb


def _chunked(
    ops: ArrayOps, dw: DeviceWindows, a_g: Any, b_g: Any, terms: _ChunkTerms, chunk: Chunk
) -> tuple[Stats, Any]:
    """Window sums from chunk-local prefix sums (see ``_lowess_plan``).

    Also flags anchors whose rounding error the fit would amplify too much.
    """
    xp = ops.xp
    pa, pb = _prefix_at_bounds(ops, dw, a_g, b_g, terms, chunk.g0)
    lo, mid, hi1 = terms.lo, terms.mid, terms.hi1
    va_left, va_right = pa[:, mid] - pa[:, lo], pa[:, hi1] - pa[:, mid]
    vb_left, vb_right = pb[:, mid] - pb[:, lo], pb[:, hi1] - pb[:, mid]
    m = xp.einsum("mqj,jm->mq", terms.coef_a[0], va_left) + xp.einsum(
        "mqj,jm->mq", terms.coef_a[1], va_right
    )
    t = xp.einsum("mqj,jm->mq", terms.coef_b[0], vb_left) + xp.einsum(
        "mqj,jm->mq", terms.coef_b[1], vb_right
    )
    m0 = m[:, 0]
    mass = va_left[0] + va_right[0]
    m0_safe = xp.where(m0 > 0, m0, 1.0)
    sbar = m[:, 1] / m0_safe
    var = m[:, 2] / m0_safe - sbar * sbar
    ybar = t[:, 0] / m0_safe
    cov = t[:, 1] / m0_safe - sbar * ybar
    # Absolute errors of the normalized sums are about eps * mass / m0; the fit amplifies
    # them by about |sbar| / var (leverage of the anchor against the weighted mean).
    amplification = (mass / m0_safe) * (1.0 + abs(sbar) / xp.where(var > 0, var, 1e-300))
    suspect = (m0 <= 0) | (var <= 0) | (amplification > dw.plan.max_amplification)
    return (m0, sbar, var, ybar, cov), suspect


def default_moments(ops: ArrayOps, xs: Any, a_g: Any, b_g: Any, dw: DeviceWindows) -> Stats:
    """Window sums for every anchor: direct for short windows, chunked for long ones."""
    out = [ops.zeros(dw.size) for _ in range(5)]
    for i in range(len(dw.blocks)):
        block = dw.direct_terms(i, xs)
        for dst, src in zip(out, _direct(ops, block, a_g, b_g), strict=True):
            dst[block.idx] = src
    redo: list[np.ndarray] = []
    fused = dw.fused_terms(xs) if dw.chunks else None
    if fused is not None:
        stats, suspect = fused_moments(fused, a_g, b_g, dw.plan.max_amplification)
        for dst, src in zip(out, stats, strict=True):
            dst[fused.anchors] = src
        redo.append(fused.anchors[suspect])
    for i, (idx, chunk) in enumerate([] if fused is not None else dw.chunks):
        terms = dw.chunk_terms(i, xs)
        stats, suspect = _chunked(ops, dw, a_g, b_g, terms, chunk)
        for dst, src in zip(out, stats, strict=True):
            dst[idx] = src
        bad = ops.host(suspect)
        if bad.any():
            redo.append(chunk.anchors[bad])
    if redo and any(r.size for r in redo):
        for block in dw.redo_terms(np.concatenate(redo), xs):
            for dst, src in zip(out, _direct(ops, block, a_g, b_g), strict=True):
                dst[block.idx] = src
    return out[0], out[1], out[2], out[3], out[4]
