"""Triton kernel for the window sums of the weighted local linear fits (float64).

One program handles ``BLOCK_M`` consecutive anchors and walks their windows (distinct x
values ``lo..hi``) in tiles of ``BLOCK_W``: a first sweep for the tricube mass and
weighted mean of ``s = (x - u) / r``, a second for the centred variance and covariance
(the same two-pass sums as the numpy direct path). Everything else (tie aggregation,
robustness weights, fallbacks) stays in torch, shared with the torch backend.

Direct summation costs O(window) per anchor, which a GPU absorbs easily; the numpy and
torch backends use chunked prefix sums instead for long windows.

Notes
-----
``triton.jit`` reads ``TRITON_INTERPRET`` when it wraps a function, so the kernel is
wrapped on first use (and again if the setting changed). triton.language's own helpers
are wrapped when triton is imported, though, so on CPU the variable must be set before
the first ``import triton`` of the process; tests run this backend in a subprocess.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from ._lowess_ops import Stats
from ._lowess_sums import DeviceWindows

# (anchors, window groups) per tile: modest on a GPU (float64 registers); large under the
# interpreter, where every tile operation is a numpy call with fixed overhead.
GPU_BLOCKS = (16, 128)
INTERPRETER_BLOCKS = (64, 512)


def _window_stats(
    xs_ptr,
    a_ptr,
    b_ptr,
    u_ptr,
    r_ptr,
    lo_ptr,
    hi_ptr,
    out_ptr,
    n_anchors,
    BLOCK_M: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    live = rows < n_anchors
    u = tl.load(u_ptr + rows, mask=live, other=0.0)
    r = tl.load(r_ptr + rows, mask=live, other=1.0)
    lo = tl.load(lo_ptr + rows, mask=live, other=0)
    hi = tl.load(hi_ptr + rows, mask=live, other=-1)
    width = tl.max(hi - lo + 1, axis=0)
    cols = tl.arange(0, BLOCK_W)

    m0 = tl.zeros([BLOCK_M], dtype=tl.float64)
    m1 = tl.zeros([BLOCK_M], dtype=tl.float64)
    y0 = tl.zeros([BLOCK_M], dtype=tl.float64)
    for start in range(0, width, BLOCK_W):
        g = lo[:, None] + start + cols[None, :]
        valid = (g <= hi[:, None]) & live[:, None]
        x = tl.load(xs_ptr + g, mask=valid, other=0.0)
        a = tl.load(a_ptr + g, mask=valid, other=0.0)
        b = tl.load(b_ptr + g, mask=valid, other=0.0)
        s = (x - u[:, None]) / r[:, None]
        d = tl.abs(s)
        t = 1.0 - d * d * d
        t = tl.where(valid, t * t * t, 0.0)
        m0 += tl.sum(t * a, axis=1)
        m1 += tl.sum(t * a * s, axis=1)
        y0 += tl.sum(t * b, axis=1)
    m0_safe = tl.where(m0 > 0, m0, 1.0)
    sbar = m1 / m0_safe

    var = tl.zeros([BLOCK_M], dtype=tl.float64)
    cov = tl.zeros([BLOCK_M], dtype=tl.float64)
    for start in range(0, width, BLOCK_W):
        g = lo[:, None] + start + cols[None, :]
        valid = (g <= hi[:, None]) & live[:, None]
        x = tl.load(xs_ptr + g, mask=valid, other=0.0)
        a = tl.load(a_ptr + g, mask=valid, other=0.0)
        b = tl.load(b_ptr + g, mask=valid, other=0.0)
        s = (x - u[:, None]) / r[:, None]
        d = tl.abs(s)
        t = 1.0 - d * d * d
        t = tl.where(valid, t * t * t, 0.0)
        ds = s - sbar[:, None]
        var += tl.sum(t * a * ds * ds, axis=1)
        cov += tl.sum(t * b * ds, axis=1)

    tl.store(out_ptr + rows, m0, mask=live)
    tl.store(out_ptr + n_anchors + rows, sbar, mask=live)
    tl.store(out_ptr + 2 * n_anchors + rows, var / m0_safe, mask=live)
    tl.store(out_ptr + 3 * n_anchors + rows, y0 / m0_safe, mask=live)
    tl.store(out_ptr + 4 * n_anchors + rows, cov / m0_safe, mask=live)


_KERNELS: dict[bool, Any] = {}


def _check_interpreter() -> None:
    """CPU tensors need the interpreter, switched on before triton was first imported."""
    if not triton.knobs.runtime.interpret:
        raise RuntimeError(
            "backend='triton' needs a CUDA device, or TRITON_INTERPRET=1 in the "
            "environment (before triton is first imported) to run on CPU"
        )
    # triton.language's own helpers (tl.max, ...) are wrapped when triton is imported.
    if type(tl.max).__name__ != "InterpretedFunction":
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after triton had been imported; set it before the "
            "first import of triton (or run the Triton backend in a fresh process)"
        )


def _kernel() -> Any:
    interpret = bool(triton.knobs.runtime.interpret)
    if interpret not in _KERNELS:
        _KERNELS[interpret] = triton.jit(_window_stats)
    return _KERNELS[interpret]


def triton_moments(xs: Any, a_g: Any, b_g: Any, dw: DeviceWindows) -> Stats:
    """Per-anchor window sums (the :data:`rewardcal_kernels._lowess_ops.MomentsFn` contract)."""
    if xs.device.type == "cpu":
        _check_interpreter()
    n = dw.size
    out = torch.empty(5 * n, dtype=torch.float64, device=xs.device)
    if n:
        block_m, block_w = INTERPRETER_BLOCKS if triton.knobs.runtime.interpret else GPU_BLOCKS
        _kernel()[(triton.cdiv(n, block_m),)](
            xs.contiguous(),
            a_g.contiguous(),
            b_g.contiguous(),
            dw.u,
            dw.safe_radius,
            dw.lo,
            dw.hi,
            out,
            n,
            BLOCK_M=block_m,
            BLOCK_W=block_w,
        )
    m0, sbar, var, ybar, cov = out.view(5, n).unbind(0)
    return m0, sbar, var, ybar, cov
