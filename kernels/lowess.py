"""LOWESS with statsmodels' semantics: validation, NaN handling and dispatch.

This is the only public face of the LOWESS kernels. It validates once, drops non-finite
pairs, aggregates tied x values and hands clean float64 data to a private implementation
(numpy, torch or Triton) that only does arithmetic.

Notes
-----
``mode="exact"`` reproduces ``statsmodels.nonparametric.lowess(y, x, frac, it, delta=0,
return_sorted=False, missing="drop")`` to rounding (about 1e-13 of the y range
measured): same neighbourhoods, tricube and bisquare weights, variance floor and
fallbacks. The speed comes from fitting once per distinct x value (ties share one fit
exactly, see ``_lowess_groups``) and from forming window sums in O(1) per anchor
(``_lowess_plan``).

``mode="grid"`` fits at about :data:`~._lowess_grid.GRID_SIZE` (512) distinct x values and
interpolates linearly in between; the robustness weights then come from the interpolated
fit. It is what a rolling window of a million observations is refitted with, and the
faster way to what statsmodels' ``delta`` does (tested against ``delta = 1%`` of the
range).

References
----------
Cleveland, W. S. (1979). Robust locally weighted regression and smoothing scatterplots.
JASA 74(368), 829-836.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from . import _lowess_numba
from ._lowess_grid import GRID_SIZE, grid_anchor_groups
from ._lowess_groups import FloatArray, Groups, IntArray, group_ties, neighbours, windows
from ._lowess_numpy import NumpyOps
from ._lowess_ops import ArrayOps, MomentsFn
from ._lowess_plan import EXACT, GRID, FitPlan, plan_fits
from ._lowess_robust import Problem, run
from .curve import LowessCurve

Mode = Literal["exact", "grid"]
Backend = Literal["numpy", "torch", "triton"]
_MODES = ("exact", "grid")
_BACKENDS = ("numpy", "torch", "triton")


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "device")


def _vector(value: Any, name: str) -> FloatArray:
    """1-D float64 host copy of an array-like or a torch tensor (CPU or CUDA)."""
    if _is_tensor(value):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _prior(weights: Any, size: int, clean: npt.NDArray[np.bool_]) -> FloatArray | None:
    """Validated prior weights of the clean pairs (None when not given)."""
    if weights is None:
        return None
    w = _vector(weights, "weights")
    if w.size != size:
        raise ValueError(f"weights and x differ in length: {w.size} != {size}")
    w = w[clean]
    if not (np.all(np.isfinite(w)) and np.all(w > 0.0)):
        raise ValueError("weights must be finite and > 0 for every finite (x, y) pair")
    # Only ratios matter (every local fit normalizes by its weight mass); scaling the
    # largest to 1 keeps sums of tiny weights (long half-lives decayed) in range.
    return w / float(w.max()) if w.size else w


def _check_params(frac: Any, it: Any, mode: Any, backend: Any) -> None:
    if not 0.0 < _real(frac, "frac") <= 1.0:
        raise ValueError(f"frac must be in (0, 1], got {frac!r}")
    if _integer(it, "it") < 0:
        raise ValueError(f"it must be >= 0, got {it!r}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")


def _backend(backend: str, like: Any) -> tuple[ArrayOps, MomentsFn | None]:
    """Array operations (and window-sum kernel) of a backend; imports torch lazily."""
    if backend == "numpy":
        return NumpyOps(), None
    import torch

    from ._lowess_torch import TorchOps

    if _is_tensor(like):
        device = like.device
    elif backend == "triton" and torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
    ops = TorchOps(device)
    if backend == "torch":
        return ops, None
    from ._lowess_triton import triton_moments

    return ops, triton_moments


def _argsort_once(x: FloatArray) -> Callable[[], IntArray]:
    cache: list[IntArray] = []

    def order() -> IntArray:
        if not cache:
            # statsmodels' own sort (default kind): decides which tied y it keeps when it
            # skips a regression.
            cache.append(np.argsort(x).astype(np.int64))
        return cache[0]

    return order


def _problem(
    x: FloatArray,
    y: FloatArray,
    frac: float,
    it: int,
    mode: str,
    direct_only: bool,
    compiled: bool = False,
    prior: FloatArray | None = None,
) -> tuple[Problem, Groups]:
    """The clean problem; ``compiled``: sum windows with the numba kernel (exact mode,
    numpy backend) when numba is installed and the anchors' plan fits its memory cap."""
    groups = group_ties(x)
    k = neighbours(x.size, frac)
    anchor_groups: IntArray | None
    if mode == "grid":
        anchor_groups = grid_anchor_groups(groups, GRID_SIZE)
        positions = groups.start[anchor_groups]
        u = groups.xs[anchor_groups]
    else:
        anchor_groups = None
        positions = groups.start
        u = groups.xs
    win = windows(groups, k, u)
    moments: MomentsFn | None = None
    if (
        compiled
        and mode == "exact"
        and win.u.size <= _lowess_numba.MAX_ANCHORS
        and _lowess_numba.available()
    ):
        # The compiled kernel plans its own direct sums and chunks (the plan below
        # carries the windows only).
        moments = _lowess_numba.numba_moments
    if moments is not None:
        plan = FitPlan(win=win, direct_blocks=(), chunks=())
    else:
        tuning = GRID if mode == "grid" else EXACT
        plan = plan_fits(win, direct_only=direct_only, tuning=tuning)
    problem = Problem(
        groups=groups,
        y=y,
        it=int(it),
        data_plan=plan,
        data_anchor_groups=anchor_groups,
        fallback_positions=positions,
        sort_order=_argsort_once(x),
        moments=moments,
        prior=prior,
    )
    return problem, groups


def lowess(
    x: Any,
    y: Any,
    frac: float = 2.0 / 3.0,
    it: int = 3,
    *,
    mode: Mode = "exact",
    backend: Backend = "numpy",
    weights: Any = None,
) -> npt.NDArray[np.float64]:
    """LOWESS fit of ``y`` on ``x``; statsmodels' result in the input order.

    Parameters
    ----------
    x, y : array_like or torch.Tensor, 1-D, equal length
        Observations; pairs with a non-finite value are dropped (NaN in the output).
        Note the order: x first (statsmodels takes ``endog, exog``).
    frac : float in (0, 1]
        Share of the observations in each local fit (``int(frac * n + 1e-10)``, >= 2).
    it : int >= 0
        Robustness passes after the first fit.
    mode : {"exact", "grid"}
        Fit at every distinct x (statsmodels' answer with ``delta=0``) or at about 512 of
        them with linear interpolation in between (approximate, for very large windows).
    backend : {"numpy", "torch", "triton"}
        numpy; torch float64 (on the device of tensor inputs, else CPU); or the Triton
        window-sum kernel (CUDA when available, or CPU with ``TRITON_INTERPRET=1``).
    weights : array_like, 1-D, optional
        Prior weight of each observation (finite and > 0 where x and y are finite), for
        example recency ``0.5 ** (age / half_life)``. Every local fit minimizes
        ``sum prior_i * tricube_i * robustness_i * (y_i - a - b x_i)^2``: the prior
        multiplies statsmodels' tricube and bisquare weights (a weighted local regression,
        Cleveland 1979, with case weights as in R's ``loess(weights=)``). The bisquare
        scale (6 times the median absolute residual) and the skip rule (fewer than two
        observations with positive weight) are those of the unweighted fit; only ratios of
        the weights matter. None: statsmodels' unweighted LOWESS.

    Returns
    -------
    numpy.ndarray of float64
        Fitted value per observation.
    """
    x_arr, y_arr = _vector(x, "x"), _vector(y, "y")
    if x_arr.size != y_arr.size:
        raise ValueError(f"x and y differ in length: {x_arr.size} != {y_arr.size}")
    _check_params(frac, it, mode, backend)
    clean = np.isfinite(x_arr) & np.isfinite(y_arr)
    prior = _prior(weights, x_arr.size, clean)
    out = np.full(x_arr.size, np.nan)
    if not clean.any():
        return out
    ops, moments = _backend(backend, x)
    problem, groups = _problem(
        x_arr[clean], y_arr[clean], frac, it, mode, moments is not None, backend == "numpy", prior
    )
    out[clean] = run(ops, problem, moments)[groups.inverse]
    return out


def lowess_curve(
    x: Any,
    y: Any,
    frac: float,
    it: int = 3,
    mode: Mode = "exact",
    *,
    backend: Backend = "numpy",
    weights: Any = None,
) -> LowessCurve:
    """The fit of :func:`lowess` at each distinct x, as an evaluable :class:`LowessCurve`.

    Where statsmodels skips a regression (fewer than two positive weights) it keeps one
    observation's y for the whole tied group; the curve holds that same value.
    ``weights``: prior observation weights, as in :func:`lowess`.

    Raises
    ------
    ValueError
        On invalid arguments (as :func:`lowess`) or when no finite (x, y) pair remains.
    """
    x_arr, y_arr = _vector(x, "x"), _vector(y, "y")
    if x_arr.size != y_arr.size:
        raise ValueError(f"x and y differ in length: {x_arr.size} != {y_arr.size}")
    _check_params(frac, it, mode, backend)
    clean = np.isfinite(x_arr) & np.isfinite(y_arr)
    if not clean.any():
        raise ValueError("no finite (x, y) pair to fit")
    prior = _prior(weights, x_arr.size, clean)
    ops, moments = _backend(backend, x)
    problem, groups = _problem(
        x_arr[clean], y_arr[clean], frac, it, mode, moments is not None, backend == "numpy", prior
    )
    return LowessCurve(xs=groups.xs, ys=run(ops, problem, moments))
