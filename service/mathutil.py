"""Numeric helpers shared by the routes and the offline protocols."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt


def sigmoid(x: float) -> float:
    """The logistic function, without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def sigmoid_each(values: Iterable[float]) -> npt.NDArray[np.float64]:
    """:func:`sigmoid` of every value (the same function, so an offline win rate and a
    served ``p_chosen`` of the same margin agree to the last bit)."""
    return np.fromiter((sigmoid(float(v)) for v in values), dtype=np.float64)
