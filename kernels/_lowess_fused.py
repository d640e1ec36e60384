"""Chunked prefix sums of every chunk at once (numpy backend).

``_lowess_sums`` forms each chunk's prefix sums in its own loop iteration: about forty
numpy calls per chunk and pass. At small spans there are dozens of chunks of a few
hundred rows each, so call overhead, not arithmetic, set the cost (frac 0.1 was slower
than frac 1.0). Here the spans of all chunks are laid end to end: one row per (chunk,
group in its span), each row in its own chunk's coordinate, so one product, one
``reduceat`` and one cumulative sum serve every chunk; a window sum is the difference of
two cumulative sums inside one chunk's rows. The power sums of each segment (rows between
consecutive window bounds) are one sparse matrix-vector product: the matrix holds the
powers of ``v`` (x only, built once), the vector the per-group weights of the pass.

Per anchor, the polynomial transforms from power sums of ``v`` to tricube-weighted sums
of ``s^q`` are one matrix product: the coefficient of ``v^j`` in
``P(alpha v + beta) = sum_p d_p (alpha v + beta)^p`` is ``alpha^j sum_k D[j, k] beta^k``
with ``D[j, k] = d_(j+k) C(j+k, j)``, so the six polynomials (q = 0, 1, 2 on each side)
take one ``(anchors, 12) @ (12, 72)`` product of powers of beta, times powers of alpha.

Rounding: the cumulative sums run over all chunks' segments in sequence (float64). After
each chunk's segments one extra column holds minus that chunk's total, so the running sum
comes back to about zero at every chunk start and a window sum carries the rounding of its own
chunk's magnitudes only, as in the per-chunk path (without the reset, differences of large
running sums lost about the number of chunks in accuracy: 1e-11 of the y range measured).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np
import scipy.sparse as sp

from ._lowess_ops import Stats
from ._lowess_plan import FitPlan

_POWERS = 12
_LAST = _POWERS - 1
# Fused terms are built when rows x powers stay under this many float64 values (128 MiB);
# larger problems fall back to the per-chunk blocked path.
FUSED_MAX_ELEMENTS = 1 << 24


# d[q, side, p]: s^q (1 + sign s^3)^3 = s^q + 3 sign s^(q+3) + 3 s^(q+6) + sign s^(q+9),
# left side (s <= 0: 1 + s^3 = 1 - |s|^3) first.
def _tricube_polynomials() -> np.ndarray:
    d = np.zeros((3, 2, _POWERS))
    for q in range(3):
        for side, sign in enumerate((1.0, -1.0)):
            d[q, side, [q, q + 3, q + 6, q + 9]] = (1.0, 3.0 * sign, 3.0, sign)
    return d


def _shift_matrix() -> np.ndarray:
    """``M[k, (q, side, j)] = d[q, side, j + k] C(j + k, j)`` (zero beyond degree 11)."""
    d = _tricube_polynomials()
    out = np.zeros((_POWERS, 3, 2, _POWERS))
    for k in range(_POWERS):
        for j in range(_POWERS - k):
            out[k, :, :, j] = d[:, :, j + k] * comb(j + k, j)
    return out.reshape(_POWERS, -1)


_SHIFT = _shift_matrix()


@dataclass(frozen=True)
class FusedTerms:
    """x-only parts of all chunks' prefix sums, built once per plan.

    ``power`` (12 x columns, groups): row ``(j, k)`` holds ``v^j`` of the rows of
    segment column ``k`` at their groups (reset columns are empty), so
    ``power @ [a_g, b_g]`` is every segment's power sums of ``a v^j`` and ``b v^j``.
    ``lo``, ``mid``, ``hi1``: per chunk anchor, the index into the cumulative sums (one
    longer than the columns) of its window's first row, first right-half row and one past
    its last row. ``chunk_first``: first column of each chunk (a reset column precedes
    every chunk but the first).
    ``coef_a`` (3, 24, anchors) turns the left and right power sums of ``a v^j`` into
    ``sum a s^q tricube(s)``; ``coef_b`` (2, 22, anchors) likewise for ``b`` (q <= 1).
    ``anchors``: plan index of each chunk anchor.
    """

    anchors: np.ndarray
    power: sp.csr_array
    columns: int
    chunk_first: np.ndarray
    lo: np.ndarray
    mid: np.ndarray
    hi1: np.ndarray
    coef_a: np.ndarray
    coef_b: np.ndarray


def _powers(v: np.ndarray) -> np.ndarray:
    out = np.empty((_POWERS, v.size))
    out[0] = 1.0
    out[1] = v
    for j in range(2, _POWERS):
        np.multiply(out[j - 1], v, out=out[j])
    return out


def fused_terms(plan: FitPlan, xs: np.ndarray) -> FusedTerms | None:
    """Terms for every chunk of ``plan``; None when they would exceed the memory budget."""
    chunks = plan.chunks
    if not chunks:
        return None
    g0 = np.array([c.g0 for c in chunks], dtype=np.int64)
    g1 = np.array([c.g1 for c in chunks], dtype=np.int64)
    length = g1 - g0
    total = int(length.sum())
    if total * (2 * _POWERS + 2) > FUSED_MAX_ELEMENTS:
        return None
    offset = np.concatenate([[0], np.cumsum(length)[:-1]])
    center = np.array([c.center for c in chunks])
    scale = np.array([c.scale for c in chunks])
    row_chunk = np.repeat(np.arange(len(chunks)), length)
    rows = np.arange(total, dtype=np.int64) + np.repeat(g0 - offset, length)
    v = (xs[rows] - center[row_chunk]) / scale[row_chunk]

    anchors = np.concatenate([c.anchors for c in chunks])
    anchor_chunk = np.repeat(np.arange(len(chunks)), [c.anchors.size for c in chunks])
    win = plan.win
    shift = (offset - g0)[anchor_chunk]
    lo = win.lo[anchors] + shift
    mid = np.clip(win.mid[anchors], win.lo[anchors], win.hi[anchors] + 1) + shift
    hi1 = win.hi[anchors] + 1 + shift
    # Segment starts: every window bound below the end of the rows, plus chunk starts.
    bounds = np.unique(np.concatenate([offset, lo, mid, hi1]))
    starts = bounds[bounds < total]

    # Segment k of chunk c sits in column k + c: one reset column follows every chunk.
    seg_chunk = np.searchsorted(offset, starts, side="right") - 1
    columns = starts.size + len(chunks) - 1

    def index(pos: np.ndarray) -> np.ndarray:
        k = np.searchsorted(starts, pos, side="left")
        return (k + anchor_chunk).astype(np.int64)

    r = win.radius[anchors]
    alpha = scale[anchor_chunk] / r
    beta = (center[anchor_chunk] - win.u[anchors]) / r
    m = anchors.size
    # coef[m, q, side, j] = alpha^j sum_k M[k, (q, side, j)] beta^k
    coef = (_powers(beta).T @ _SHIFT).reshape(m, 3, 2, _POWERS)
    coef *= _powers(alpha).T[:, None, None, :]
    # Sparse (power, segment) x group matrices: each row of the laid-out spans belongs
    # to one segment; its column is its group.
    vpow = _powers(v)
    seg_len = np.diff(np.append(starts, total))

    col_len = np.zeros(columns, dtype=np.int64)
    col_len[np.arange(starts.size) + seg_chunk] = seg_len

    indptr = np.zeros(_POWERS * columns + 1, dtype=np.int64)
    # Row pointers of the (power, column) rows: the column lengths, once per power.
    np.cumsum(np.broadcast_to(col_len, (_POWERS, columns)), out=indptr[1:])
    power = sp.csr_array(
        (vpow.ravel(), np.broadcast_to(rows, (_POWERS, total)).ravel(), indptr),
        shape=(_POWERS * columns, xs.size),
    )

    coef_a = coef.reshape(m, 3, 2 * _POWERS).transpose(1, 2, 0)
    coef_b = coef[:, :2, :, :_LAST].reshape(m, 2, 2 * _LAST).transpose(1, 2, 0)
    return FusedTerms(
        anchors=anchors,
        power=power,
        columns=columns,
        chunk_first=(np.searchsorted(starts, offset) + np.arange(len(chunks))).astype(np.int64),
        lo=index(lo),
        mid=index(mid),
        hi1=index(hi1),
        coef_a=np.ascontiguousarray(coef_a),
        coef_b=np.ascontiguousarray(coef_b),
    )


def fused_moments(
    terms: FusedTerms, a_g: np.ndarray, b_g: np.ndarray, max_amplification: float
) -> tuple[Stats, np.ndarray]:
    """Window sums of every chunk anchor, and a mask of fits to recompute directly."""
    n_col = terms.columns
    seg = np.empty((_POWERS + _LAST, n_col))
    both = (terms.power @ np.column_stack([a_g, b_g])).reshape(_POWERS, n_col, 2)
    seg[:_POWERS] = both[:, :, 0]
    seg[_POWERS:] = both[:_LAST, :, 1]
    first = terms.chunk_first
    if first.size > 1:
        # Reset columns (empty so far, hence 0 in the totals) get minus their chunk's total.
        totals = np.add.reduceat(seg, first, axis=1)
        seg[:, first[1:] - 1] = -totals[:, :-1]
    cum = np.zeros((_POWERS + _LAST, n_col + 1))
    np.cumsum(seg, axis=1, out=cum[:, 1:])
    at_mid = cum[:, terms.mid]
    left = at_mid - cum[:, terms.lo]
    right = cum[:, terms.hi1] - at_mid
    va = np.concatenate([left[:_POWERS], right[:_POWERS]])
    vb = np.concatenate([left[_POWERS:], right[_POWERS:]])
    m = np.einsum("qjm,jm->qm", terms.coef_a, va)
    t = np.einsum("qjm,jm->qm", terms.coef_b, vb)
    m0 = m[0]
    mass = va[0] + va[_POWERS]
    m0_safe = np.where(m0 > 0, m0, 1.0)
    sbar = m[1] / m0_safe
    var = m[2] / m0_safe - sbar * sbar
    ybar = t[0] / m0_safe
    cov = t[1] / m0_safe - sbar * ybar
    # Same rule as the per-chunk path: absolute errors of the normalized sums are about
    # eps * mass / m0, amplified by the anchor's leverage |sbar| / var.
    amplification = (mass / m0_safe) * (1.0 + np.abs(sbar) / np.where(var > 0, var, 1e-300))
    suspect = (m0 <= 0) | (var <= 0) | (amplification > max_amplification)
    return (m0, sbar, var, ybar, cov), suspect
