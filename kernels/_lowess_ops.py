"""The array operations the LOWESS engine needs from a backend (numpy, torch).

The engine's arithmetic is written once with operators and indexing, which numpy arrays
and torch tensors share; what they do differently (device transfers, bincount, fast
prefix sums, the median) goes through this small protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from ._lowess_sums import DeviceWindows


class ArrayOps(Protocol):
    """What the fit needs from an array library beyond operators and indexing."""

    xp: Any

    def array(self, a: np.ndarray) -> Any: ...

    def host(self, a: Any) -> np.ndarray: ...

    def zeros(self, shape: int | tuple[int, ...]) -> Any: ...

    def arange(self, n: int) -> Any: ...

    def bincount(self, index: Any, weights: Any, size: int) -> Any: ...

    def power_rows(self, v: Any, count: int) -> Any:
        """``out[j] = v ** j`` for ``j < count``, by repeated products (pow is slow)."""
        ...

    def prefix_at(self, a: Any, ends: np.ndarray) -> tuple[Any, Any]:
        """Sums of ``a[:, :e]`` for each ``e`` in ``ends`` (sorted, in ``1..a.shape[1]``),
        as ``(rows, len(ends))``, and the row totals as ``(rows, 1)``."""
        ...

    def cumsum0(self, a: Any) -> Any:
        """Cumulative sums along axis 0 with a leading row of zeros."""
        ...

    def robustness_weights(self, y: Any, fit: Any, inverse: Any) -> Any:
        """statsmodels' bisquare weights of the residuals ``y - fit[inverse]``."""
        ...


Stats = tuple[Any, Any, Any, Any, Any]
"""Per anchor: tricube mass ``m0``, ``sbar``, ``var_s``, ``ybar``, ``cov_s`` (normalized)."""

MomentsFn = Callable[[Any, Any, Any, "DeviceWindows"], Stats]
"""``(xs, a_g, b_g, windows) -> Stats``: a backend's own window-sum kernel."""
