"""Compiled window sums for exact LOWESS on CPU (numba); the numpy path is the fallback.

Notes
-----
Same method as the numpy engine (``_lowess_plan``, ``_lowess_fused``), compiled: windows of
at most :data:`DIRECT_MAX_WIDTH` distinct x values are summed directly with statsmodels'
tricube ``(1 - |(x - u) / r|^3)^3`` times the aggregated robustness weights; wider ones
come from chunk-local prefix sums of ``a v^j`` and ``b v^j`` (j <= 11) and a per-anchor
binomial transform to the anchor's own ``s = (x - u) / r``, with the same chunk rule and the
same amplification test that sends ill-conditioned fits back to direct summation. The
numpy engine spends its time in dozens of numpy calls per chunk and pass (flat at ~20-40 ms
at n = 50,000 whatever the span); here one pass is one compiled call (~0.5-1 ms), and the
x-only part (which anchors are chunked, chunk coordinates, each anchor's 120 transform
coefficients) is computed once per fit (:func:`_plan_py`) and reused by every pass.

Accuracy: direct sums are one pass in ``s`` (``|s| <= 1``); when ``var`` is small against
``m2 / m0`` (cancellation) the anchor is summed again about ``sbar``. ``fastmath`` allows
re-association (SIMD reductions) and contraction only: no NaN/Inf assumptions. Measured
deviation from statsmodels: <= 3e-12 of the y range (bench/results/lowess_spans.md).

The first call compiles the kernels (a few seconds); ``cache=True`` stores the machine
code in ``__pycache__`` next to this file, so later processes load it (~0.5 s).
"""

from __future__ import annotations

import importlib.util
import weakref
from math import comb
from typing import TYPE_CHECKING, Any

import numpy as np

from ._lowess_ops import Stats
from ._lowess_plan import EXACT

if TYPE_CHECKING:
    from ._lowess_sums import DeviceWindows

# numba is a pinned dependency, imported on the first compiled fit rather than with this
# module: importing numba loads llvmlite, whose ctypes wrappers break vLLM's CPU worker
# start-up scan of every module (vllm/triton_utils/dispatcher.py calls vars() on each
# module attribute), and the vLLM engine's spawned workers import the service.
_HAVE_NUMBA = importlib.util.find_spec("numba") is not None

# Windows of at most this many distinct x values are summed directly; wider ones from
# chunked prefix sums (the cut where both cost about the same here).
DIRECT_MAX_WIDTH = 64
# The x-only plan holds 120 coefficients per chunked anchor (960 bytes): above this many
# anchors (about 120 MiB) the numpy path, whose memory is bounded, is used instead.
MAX_ANCHORS = 1 << 17
# Re-sum about sbar when var < this share of m2 / m0 (cancellation in the one-pass form
# costs at most about eps / share relative in var).
_RECENTRE_SHARE = 1e-3
_POWERS = 12  # s^0 .. s^11: degree-9 tricube times s^2
_BINOM = np.array([[comb(p, j) for j in range(_POWERS)] for p in range(_POWERS)], dtype=float)

_FAST = {"reassoc", "contract"}


def _jit(fn: Any) -> Any:
    from numba import njit

    try:
        return njit(cache=True, nogil=True, fastmath=_FAST)(fn)
    except RuntimeError:  # no writable cache location (read-only install, no HOME cache)
        return njit(cache=False, nogil=True, fastmath=_FAST)(fn)


def _direct_one_py(
    xs: np.ndarray,
    a_g: np.ndarray,
    b_g: np.ndarray,
    ui: float,
    radius: float,
    lo: int,
    hi: int,
    out: np.ndarray,
    i: int,
) -> None:
    """``out[:, i]`` = m0, sbar, var, ybar, cov of one anchor (normalized by m0)."""
    # Multiply by 1 / r: a division per element keeps the loop from vectorizing
    # (0.6 vs 1.3 ns per element); weights differ by an ulp, about 1e-16 relative.
    inv_r = 1.0 / radius if radius > 0.0 else 1.0
    # Slices, not ``range(lo, hi + 1)`` indexing: with a start of 0 numba proves the
    # index non-negative and drops its wrap-around check, which also blocks SIMD.
    xw = xs[lo : hi + 1]
    aw = a_g[lo : hi + 1]
    bw = b_g[lo : hi + 1]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    t0 = 0.0
    t1 = 0.0
    for j in range(xw.size):
        s = (xw[j] - ui) * inv_r
        d = abs(s)
        t = 1.0 - d * d * d
        w = t * t * t
        a = w * aw[j]
        b = w * bw[j]
        s0 += a
        s1 += a * s
        s2 += a * s * s
        t0 += b
        t1 += b * s
    m0 = s0 if s0 > 0.0 else 1.0
    sbar = s1 / m0
    var = s2 / m0 - sbar * sbar
    ybar = t0 / m0
    cov = t1 / m0 - sbar * ybar
    if var < _RECENTRE_SHARE * (s2 / m0):
        v2 = 0.0
        c1 = 0.0
        for j in range(xw.size):
            s = (xw[j] - ui) * inv_r
            d = abs(s)
            t = 1.0 - d * d * d
            w = t * t * t
            ds = s - sbar
            v2 += w * aw[j] * ds * ds
            c1 += w * bw[j] * ds
        var = v2 / m0
        cov = c1 / m0
    out[0, i] = s0
    out[1, i] = sbar
    out[2, i] = var
    out[3, i] = ybar
    out[4, i] = cov


_direct_one: Any = None  # compiled by _compile()


def _plan_py(
    u: np.ndarray,
    radius: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    binom: np.ndarray,
    spread: float,
    ratio: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x-only part, once per fit: which anchors are chunked, their chunks, coefficients.

    Returns ``wide`` (anchors summed by prefix sums, in order), ``bounds`` (chunk ``c``
    holds ``wide[bounds[c]:bounds[c + 1]]``), per chunk ``g0``, ``g1`` (its groups),
    ``center``, ``scale`` (``v = (x - center) / scale``), and ``coef`` (wide, 2 sides,
    5 sums, 12 powers): ``sum a s^q tricube(s)`` on a side is ``coef[., side, q] .`` the
    side's power sums of ``a v^j`` (q = 0, 1, 2; rows 3, 4: the same of ``b``, q = 0, 1).
    Chunks follow ``_lowess_plan``'s rule: anchors within ``spread`` times the smallest
    radius, radii within ``ratio``.
    """
    m = u.size
    wide = np.empty(m, dtype=np.int64)
    n_wide = 0
    for i in range(m):
        if hi[i] - lo[i] + 1 > DIRECT_MAX_WIDTH and radius[i] > 0.0:
            wide[n_wide] = i
            n_wide += 1
    wide = wide[:n_wide]
    bounds = np.empty(n_wide + 1, dtype=np.int64)
    g0 = np.empty(n_wide, dtype=np.int64)
    g1 = np.empty(n_wide, dtype=np.int64)
    center = np.empty(n_wide)
    scale = np.empty(n_wide)
    coef = np.zeros((n_wide, 2, 5, _POWERS))
    shift = np.zeros((_POWERS, _POWERS))
    beta_pow = np.empty(_POWERS)
    alpha_pow = np.empty(_POWERS)
    n_chunks = 0
    start = 0
    while start < n_wide:
        first = wide[start]
        r_min = radius[first]
        r_max = radius[first]
        stop = start + 1
        while stop < n_wide:
            j = wide[stop]
            r_lo = min(r_min, radius[j])
            r_hi = max(r_max, radius[j])
            if u[j] - u[first] > spread * r_lo or r_hi > ratio * r_lo:
                break
            r_min = r_lo
            r_max = r_hi
            stop += 1
        c0 = lo[first]
        c1 = hi[first] + 1
        for k in range(start, stop):
            c0 = min(c0, lo[wide[k]])
            c1 = max(c1, hi[wide[k]] + 1)
        c = n_chunks
        bounds[c] = start
        g0[c] = c0
        g1[c] = c1
        center[c] = 0.5 * (u[first] + u[wide[stop - 1]])
        scale[c] = r_max
        for k in range(start, stop):
            i = wide[k]
            # s = alpha v + beta: sum a s^d = sum_j C(d, j) beta^(d - j) alpha^j sum a v^j
            alpha = r_max / radius[i]
            beta = (center[c] - u[i]) / radius[i]
            bp = 1.0
            ap = 1.0
            for e in range(_POWERS):
                beta_pow[e] = bp
                alpha_pow[e] = ap
                bp *= beta
                ap *= alpha
            for d in range(_POWERS):
                for j in range(d + 1):
                    shift[d, j] = binom[d, j] * beta_pow[d - j] * alpha_pow[j]
            # Tricube on the left (s <= 0) is 1 + 3 s^3 + 3 s^6 + s^9, on the right
            # 1 - 3 s^3 + 3 s^6 - s^9; rows q + 3 of coef are the same for b (q <= 1).
            for side in range(2):
                sign = 1.0 if side == 0 else -1.0
                for q in range(3):
                    for e in range(4):
                        d = q + 3 * e
                        w = 1.0 if e == 0 or e == 2 else sign
                        if e == 1 or e == 2:
                            w *= 3.0
                        for j in range(d + 1):
                            coef[k, side, q, j] += w * shift[d, j]
                        if q < 2:
                            for j in range(d + 1):
                                coef[k, side, 3 + q, j] += w * shift[d, j]
        n_chunks += 1
        start = stop
    bounds[n_chunks] = n_wide
    return wide, bounds[: n_chunks + 1], g0, g1, center, scale, coef


_plan: Any = None


def _pass_py(
    xs: np.ndarray,
    a_g: np.ndarray,
    b_g: np.ndarray,
    u: np.ndarray,
    radius: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    mid: np.ndarray,
    wide: np.ndarray,
    bounds: np.ndarray,
    g0: np.ndarray,
    g1: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    coef: np.ndarray,
    max_amplification: float,
    out: np.ndarray,
) -> int:
    """Window sums of every anchor into ``out`` (5, M) for one robustness pass; returns
    how many chunked fits were re-summed directly.

    Short windows are summed directly. Each chunk takes prefix sums of ``a v^j`` and
    ``b v^j`` in its own coordinate over its groups, and each of its anchors contracts its
    window's power sums (left of the anchor, right of it) with its coefficients. Fits whose
    rounding the leverage amplifies beyond ``max_amplification`` are re-summed directly.
    """
    m = u.size
    is_wide = np.zeros(m, dtype=np.bool_)
    for k in range(wide.size):
        is_wide[wide[k]] = True
    for i in range(m):
        if not is_wide[i]:
            _direct_one(xs, a_g, b_g, u[i], radius[i], lo[i], hi[i], out, i)
    redone = 0
    sums = np.empty(5)
    left = np.empty((2, _POWERS))
    right = np.empty((2, _POWERS))
    for c in range(bounds.size - 1):
        span = g1[c] - g0[c]
        # p[k, 0, j] = sum over the chunk's first k groups of a v^j (p[k, 1, j]: b v^j).
        p = np.empty((span + 1, 2, _POWERS))
        p[0] = 0.0
        for k in range(span):
            g = g0[c] + k
            v = (xs[g] - center[c]) / scale[c]
            a = a_g[g]
            b = b_g[g]
            pw = 1.0
            for j in range(_POWERS):
                p[k + 1, 0, j] = p[k, 0, j] + a * pw
                p[k + 1, 1, j] = p[k, 1, j] + b * pw
                pw *= v
        for k in range(bounds[c], bounds[c + 1]):
            i = wide[k]
            k_lo = lo[i] - g0[c]
            k_mid = mid[i] - g0[c]
            k_hi = hi[i] + 1 - g0[c]
            for j in range(_POWERS):
                for half in range(2):
                    left[half, j] = p[k_mid, half, j] - p[k_lo, half, j]
                    right[half, j] = p[k_hi, half, j] - p[k_mid, half, j]
            for row in range(5):
                half = 0 if row < 3 else 1
                acc = 0.0
                for j in range(_POWERS):
                    acc += coef[k, 0, row, j] * left[half, j] + coef[k, 1, row, j] * right[half, j]
                sums[row] = acc
            m0 = sums[0]
            mass = p[k_hi, 0, 0] - p[k_lo, 0, 0]
            m0_safe = m0 if m0 > 0.0 else 1.0
            sbar = sums[1] / m0_safe
            var = sums[2] / m0_safe - sbar * sbar
            ybar = sums[3] / m0_safe
            cov = sums[4] / m0_safe - sbar * ybar
            # Absolute errors of the normalized sums are about eps * mass / m0; the fit
            # amplifies them by about |sbar| / var (as in the numpy chunked path).
            amp = (mass / m0_safe) * (1.0 + abs(sbar) / (var if var > 0.0 else 1e-300))
            if m0 <= 0.0 or var <= 0.0 or amp > max_amplification:
                _direct_one(xs, a_g, b_g, u[i], radius[i], lo[i], hi[i], out, i)
                redone += 1
            else:
                out[0, i] = m0
                out[1, i] = sbar
                out[2, i] = var
                out[3, i] = ybar
                out[4, i] = cov
    return redone


_pass: Any = None


def _compile() -> Any:
    """The compiled kernels, made once (numba resolves the globals _pass_py calls at its
    first call, so those are set first)."""
    global _direct_one, _plan, _pass
    if _pass is None:
        _direct_one = _jit(_direct_one_py)
        _plan = _jit(_plan_py)
        _pass = _jit(_pass_py)
    return _pass


def available() -> bool:
    """Whether the compiled kernel can be used (numba importable)."""
    return _HAVE_NUMBA


# x-only plans of the windows being fitted (a DeviceWindows lives for one fit).
_PLANS: weakref.WeakKeyDictionary[DeviceWindows, tuple[np.ndarray, ...]] = (
    weakref.WeakKeyDictionary()
)


def numba_moments(xs: Any, a_g: Any, b_g: Any, dw: DeviceWindows) -> Stats:
    """:data:`._lowess_ops.MomentsFn`, compiled (numpy arrays, exact-mode tuning)."""
    if not _HAVE_NUMBA:  # pragma: no cover - callers check available()
        raise RuntimeError("numba is not installed")
    compiled = _compile()
    plan = _PLANS.get(dw)
    if plan is None:
        plan = _plan(dw.u, dw.radius, dw.lo, dw.hi, _BINOM, EXACT.spread, EXACT.ratio)
        _PLANS[dw] = plan
    out = np.empty((5, dw.size))
    compiled(
        np.ascontiguousarray(xs, dtype=np.float64),
        np.ascontiguousarray(a_g, dtype=np.float64),
        np.ascontiguousarray(b_g, dtype=np.float64),
        dw.u,
        dw.radius,
        dw.lo,
        dw.hi,
        dw.mid,
        *plan,
        EXACT.max_amplification,
        out,
    )
    return out[0], out[1], out[2], out[3], out[4]
