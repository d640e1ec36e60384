"""The closed-loop load generator of the benchmarks and the GPU check.

``clients`` coroutines send requests back to back (each waits for its answer before the
next), the way a trainer's reward workers do, until ``requests`` were sent or ``max_s``
passed. What a request carries is the caller's ``send``; this module counts, times and
summarises.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

# Sends request number ``i`` (0, 1, ...) and returns how many items it scored; raises on a
# failed request.
Send = Callable[[int], Awaitable[int]]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between closest ranks
    (numpy's default); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class LoadRun:
    """One run of the load: wall time from the first send to the last answer."""

    wall_s: float
    items: int  # items of the requests that succeeded
    requests: int  # requests answered, failed ones included
    errors: int
    latencies: list[float] = field(default_factory=list)  # s, send to answer, successes only
    capped: bool = False  # the time limit ended it before every request was sent

    @property
    def items_per_s(self) -> float:
        return self.items / self.wall_s if self.wall_s > 0 else 0.0

    def latency(self, q: float) -> float:
        """Request latency percentile ``q`` (0-100), seconds."""
        return percentile(self.latencies, q)


async def closed_loop(
    send: Send,
    requests: int,
    clients: int,
    max_s: float,
    *,
    tolerate: tuple[type[BaseException], ...] = (),
) -> LoadRun:
    """Run ``send`` for requests ``0 .. requests - 1`` from ``clients`` concurrent clients.

    A request that raises one of ``tolerate`` counts as an error and the load goes on; any
    other exception stops every client and propagates. No request starts after ``max_s``.
    """
    latencies: list[float] = []
    counts = {"next": 0, "items": 0, "errors": 0, "done": 0}
    start = time.perf_counter()
    deadline = start + max_s
    last_answer = start

    async def client() -> None:
        nonlocal last_answer
        while counts["next"] < requests and time.perf_counter() < deadline:
            index = counts["next"]
            counts["next"] += 1
            sent = time.perf_counter()
            try:
                items = await send(index)
            except tolerate:
                items = -1
            now = time.perf_counter()
            last_answer = max(last_answer, now)
            counts["done"] += 1
            if items < 0:
                counts["errors"] += 1
            else:
                latencies.append(now - sent)
                counts["items"] += items

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(clients, max(requests, 1))):
                group.create_task(client())
    except BaseExceptionGroup as failed:
        # The first client's failure, as itself (the group cancelled the other clients).
        raise failed.exceptions[0] from None
    return LoadRun(
        wall_s=last_answer - start,
        items=counts["items"],
        requests=counts["done"],
        errors=counts["errors"],
        latencies=latencies,
        capped=counts["next"] < requests,
    )


def async_client(connections: int, timeout_s: float, connect_s: float = 30.0) -> Any:
    """An httpx.AsyncClient that keeps one connection per client alive (no reconnects in
    the measured time)."""
    import httpx

    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(timeout_s, connect=connect_s),
    )
