"""Compiled direct window sums for exact LOWESS on CPU (numba), with the numpy path as fallback.

Notes
-----
The numpy engine forms the sums of wide windows from chunked prefix sums of powers of x
(``_lowess_fused``): O(1) per anchor, but dozens of numpy calls per chunk and pass, which
set its cost at small spans. Compiled, the plain definition is faster at the sizes the
service fits: every anchor sums its window's distinct x values one by one, with
statsmodels' tricube ``(1 - |(x - u) / r|^3)^3`` times the aggregated robustness weights.
The cost is the total window width (distinct values), about 2-23 million per pass at
n = 50,000 (0.2-7 ms); :data:`NUMBA_MAX_WINDOW_ELEMENTS` bounds it, beyond which the
prefix-sum path (O(distinct x) per pass) is used.

Accuracy: the sums are taken in ``s = (x - u) / r`` (``|s| <= 1``), one pass. The variance
``m2 / m0 - sbar^2`` loses relative accuracy only when it is small against ``m2 / m0``
(weight concentrated off the anchor); those anchors are summed again about ``sbar``
(two-pass, as the numpy direct path always does). ``fastmath`` allows re-association
(SIMD reductions) and contraction only: no NaN/Inf assumptions, so empty windows stay exact
zeros. Rounding differs from statsmodels' own summation order by about 1e-15 relative.

The first call compiles the kernel (about a second, see bench/RESULTS.md); ``cache=True``
stores the machine code next to this file (``__pycache__``), so a service pays that once
per installation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ._lowess_ops import Stats

if TYPE_CHECKING:
    from ._lowess_sums import DeviceWindows

try:  # numba is a pinned dependency; the numpy path remains the reference and fallback.
    from numba import njit
except ImportError:  # pragma: no cover - exercised only where numba is absent
    njit = None

# Above this many (anchor, distinct x) pairs per pass the O(window) sums lose to the
# prefix-sum path (about 10 ms per pass here at this size).
NUMBA_MAX_WINDOW_ELEMENTS = 12_000_000
# Re-sum about sbar when var < this share of m2 / m0 (cancellation in the one-pass form
# costs at most about eps / share relative in var).
_RECENTRE_SHARE = 1e-3

_FAST = {"reassoc", "contract"}


def _window_sums_py(
    xs: np.ndarray,
    a_g: np.ndarray,
    b_g: np.ndarray,
    u: np.ndarray,
    radius: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[:, i]`` = m0, sbar, var, ybar, cov of anchor ``i`` (normalized by m0)."""
    for i in range(u.size):
        ui = u[i]
        # Multiply by 1 / r: a division per element keeps the loop from vectorizing
        # (0.6 vs 1.3 ns per element); weights differ by an ulp, about 1e-16 relative.
        inv_r = 1.0 / radius[i] if radius[i] > 0.0 else 1.0
        # Slices, not ``range(lo, hi + 1)`` indexing: with a start of 0 numba proves the
        # index non-negative and drops its wrap-around check, which also blocks SIMD.
        xw = xs[lo[i] : hi[i] + 1]
        aw = a_g[lo[i] : hi[i] + 1]
        bw = b_g[lo[i] : hi[i] + 1]
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


_window_sums = (
    njit(cache=True, nogil=True, fastmath=_FAST)(_window_sums_py) if njit is not None else None
)


def available() -> bool:
    """Whether the compiled kernel can be used (numba importable)."""
    return _window_sums is not None


def window_elements(lo: np.ndarray, hi: np.ndarray) -> int:
    """(anchor, distinct x) pairs one pass of direct sums visits."""
    return int((hi - lo).sum()) + int(lo.size)


def numba_moments(xs: Any, a_g: Any, b_g: Any, dw: DeviceWindows) -> Stats:
    """:data:`kernels._lowess_ops.MomentsFn` by compiled direct summation (numpy arrays)."""
    if _window_sums is None:  # pragma: no cover - callers check available()
        raise RuntimeError("numba is not installed")
    out = np.empty((5, dw.size))
    _window_sums(
        np.ascontiguousarray(xs, dtype=np.float64),
        np.ascontiguousarray(a_g, dtype=np.float64),
        np.ascontiguousarray(b_g, dtype=np.float64),
        dw.u,
        dw.radius,
        dw.lo,
        dw.hi,
        out,
    )
    return out[0], out[1], out[2], out[3], out[4]
