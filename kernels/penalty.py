"""The length-penalty baseline of the paper: ``reward - coef * length``."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def length_penalty(y: Any, x: Any, coef: float = 0.001) -> npt.NDArray[np.float64]:
    """``y - coef * x`` elementwise (the paper's baseline uses ``coef = 0.001`` per char).

    ``y`` and ``x`` must have the same shape; NaN propagates.
    """
    y_arr = np.asarray(y, dtype=np.float64)
    x_arr = np.asarray(x, dtype=np.float64)
    if y_arr.shape != x_arr.shape:
        raise ValueError(f"y and x differ in shape: {y_arr.shape} != {x_arr.shape}")
    if not np.isfinite(coef):
        raise ValueError(f"coef must be finite, got {coef!r}")
    return y_arr - coef * x_arr
