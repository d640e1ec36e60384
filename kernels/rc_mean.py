"""RC-Mean: the paper's windowed-mean bias estimate, in O(n log n).

Notes
-----
Huang et al. (2024) estimate the bias at characteristic ``c`` as the mean reward of the
samples whose characteristic lies in ``[c - d, c + d]``, with
``d = mean |c_chosen - c_rejected| / ratio`` (``ratio = 4``), and leave a reward unchanged
when fewer than 20 samples fall in the window. Their script's ``find_interval`` slices
``rewards[bisect_left(lo) : bisect_right(hi) - 1]``, which drops the last sample of every
window; this module follows the stated definition (every sample in the closed interval).

Sorting once and taking prefix sums of the centred rewards makes every window mean two
binary searches and a subtraction.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _vector(value: Any, name: str) -> FloatArray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def rc_mean(
    x: Any,
    y: Any,
    d: float,
    min_neighbors: int = 20,
    x_eval: Any = None,
) -> FloatArray:
    """Mean ``y`` of the samples with ``x`` in ``[e - d, e + d]``, for each point ``e``.

    Parameters
    ----------
    x, y : array_like, 1-D, equal length
        Characteristic (e.g. length) and reward of the reference samples; pairs with a
        non-finite value are left out.
    d : float >= 0
        Half-width of the window (see :func:`rc_mean_radius`).
    min_neighbors : int >= 1
        Windows with fewer samples give NaN: the caller then leaves the reward unchanged.
    x_eval : array_like, 1-D, optional
        Where to evaluate; defaults to ``x`` (NaN where it is not finite).

    Returns
    -------
    numpy.ndarray of float64, one estimate per evaluation point.
    """
    x_arr, y_arr = _vector(x, "x"), _vector(y, "y")
    if x_arr.size != y_arr.size:
        raise ValueError(f"x and y differ in length: {x_arr.size} != {y_arr.size}")
    if isinstance(d, bool) or not isinstance(d, numbers.Real) or not np.isfinite(d) or d < 0:
        raise ValueError(f"d must be a finite number >= 0, got {d!r}")
    if (
        isinstance(min_neighbors, bool)
        or not isinstance(min_neighbors, numbers.Integral)
        or min_neighbors < 1
    ):
        raise ValueError(f"min_neighbors must be an integer >= 1, got {min_neighbors!r}")
    e = x_arr if x_eval is None else _vector(x_eval, "x_eval")
    clean = np.isfinite(x_arr) & np.isfinite(y_arr)
    order = np.argsort(x_arr[clean], kind="stable")
    xs = x_arr[clean][order]
    ys = y_arr[clean][order]
    center = float(ys.mean()) if ys.size else 0.0
    prefix = np.concatenate([[0.0], np.cumsum(ys - center)])
    out = np.full(e.size, np.nan)
    ok = np.isfinite(e)
    lo = np.searchsorted(xs, e[ok] - d, side="left")
    hi = np.searchsorted(xs, e[ok] + d, side="right")
    count = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (prefix[hi] - prefix[lo]) / count + center
    out[ok] = np.where(count >= min_neighbors, mean, np.nan)
    return out


def rc_mean_radius(chosen_x: Any, rejected_x: Any, ratio: float = 4.0) -> float:
    """The paper's window half-width: ``mean |chosen_x - rejected_x| / ratio``.

    Raises
    ------
    ValueError
        On unequal lengths, no pairs, non-finite values or ``ratio <= 0``.
    """
    c = _vector(chosen_x, "chosen_x")
    r = _vector(rejected_x, "rejected_x")
    if c.size != r.size:
        raise ValueError(f"chosen_x and rejected_x differ in length: {c.size} != {r.size}")
    if c.size == 0:
        raise ValueError("rc_mean_radius needs at least one pair")
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(r))):
        raise ValueError("chosen_x and rejected_x must be finite")
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, numbers.Real)
        or not np.isfinite(ratio)
        or ratio <= 0
    ):
        raise ValueError(f"ratio must be a finite number > 0, got {ratio!r}")
    return float(np.mean(np.abs(c - r)) / ratio)
