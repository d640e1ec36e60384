"""Admission: a request takes one permit for its inputs before any work is done for it.

When the inputs in flight (admitted and not yet answered: being tokenized, queued, in a
batch, at the engine) plus the request's would exceed ``capacity``, the request is refused
at once with 503 + Retry-After instead of queueing without bound. The permit is given back
when the request ends, however it ends: answered, failed, or cancelled because its client
left (its inputs stop counting at once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rewardcal.errors import Overloaded
from rewardcal.metrics import ServingMetrics


class Admission:
    def __init__(
        self, capacity: int, *, retry_after_s: int = 1, metrics: ServingMetrics | None = None
    ) -> None:
        self.capacity = capacity
        self._retry_after_s = retry_after_s
        self._metrics = metrics
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """Inputs admitted and not yet answered."""
        return self._in_flight

    @contextlib.contextmanager
    def permit(self, count: int) -> Iterator[None]:
        if self._in_flight + count > self.capacity:
            if self._metrics is not None:
                self._metrics.rejected(count)
            raise Overloaded(
                f"server overloaded: {self._in_flight} inputs in flight, the limit is "
                f"{self.capacity} (max_queue); retry later",
                self._retry_after_s,
            )
        self._in_flight += count
        try:
            yield
        finally:
            self._in_flight -= count
