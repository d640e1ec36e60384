"""A rolling window of observations: the last W (features, raw reward) rows."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from rewardcal.features import FEATURE_NAMES

Array = npt.NDArray[np.float64]


class RollingWindow:
    """Fixed-capacity ring buffer. Not thread-safe: its stream holds the lock."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # Allocated on first use: a stream that was reset (or never observed) costs nothing.
        self._features = np.zeros((0, len(FEATURE_NAMES)), dtype=np.float64)
        self._raw = np.zeros(0, dtype=np.float64)
        self._next = 0
        self._size = 0
        self.total = 0  # observations ever added

    def __len__(self) -> int:
        return self._size

    def add(self, features: Array, raw: Array) -> None:
        """Append rows (features: (n, F), raw: (n,)); the oldest fall out."""
        n = raw.shape[0]
        if n == 0:
            return
        self._allocate()
        self.total += n
        if n >= self.capacity:
            features, raw = features[-self.capacity :], raw[-self.capacity :]
            n = self.capacity
        end = self._next + n
        if end <= self.capacity:
            self._features[self._next : end] = features
            self._raw[self._next : end] = raw
        else:
            first = self.capacity - self._next
            self._features[self._next :] = features[:first]
            self._raw[self._next :] = raw[:first]
            self._features[: n - first] = features[first:]
            self._raw[: n - first] = raw[first:]
        self._next = end % self.capacity
        self._size = min(self.capacity, self._size + n)

    def _allocate(self) -> None:
        if self._raw.shape[0] != self.capacity:
            self._features = np.zeros((self.capacity, len(FEATURE_NAMES)), dtype=np.float64)
            self._raw = np.zeros(self.capacity, dtype=np.float64)

    def arrays(self) -> tuple[Array, Array]:
        """Copies of the rows, oldest first."""
        if self._size < self.capacity:
            return self._features[: self._size].copy(), self._raw[: self._size].copy()
        order = np.r_[self._next : self.capacity, 0 : self._next]
        return self._features[order], self._raw[order]

    def clear(self) -> None:
        self._next = 0
        self._size = 0

    def load(self, features: Array, raw: Array, total: int) -> None:
        self.clear()
        self.add(features, raw)
        self.total = max(total, len(raw))
