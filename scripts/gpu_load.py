"""The GPU check's time budget and its figures of one load phase against one side.

The load itself is benchkit's closed loop (shared with the benchmarks); this adds what the
check reports on top: the tokens each side says it scored, and the front end's CPU time.
Profile-free: which items, how many and for how long is the caller's business.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from benchkit.load import closed_loop
from benchkit.processes import process_cpu_seconds


class StepTimeout(Exception):
    pass


class Budget:
    """The whole check's time limit; each wait gets what is left, at most its own limit."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.deadline = self.started + seconds

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def left(self, cap: float) -> float:
        remaining = self.remaining()
        if remaining <= 5:
            raise StepTimeout("the check's time budget is spent")
        return min(cap, remaining)


@dataclass
class LoadFigures:
    items: int
    requests: int
    seconds: float
    items_per_s: float
    p50_ms: float
    p99_ms: float
    mean_tokens: float  # per item, as the side itself counted them (its answers' usage)
    max_tokens_per_request: int
    front_end_cpu_ms_per_request: float
    front_end_cpu_share: float  # front-end CPU seconds per wall second (1.0 = one core)


# A sender posts the items at these indices and returns the tokens the side says it scored.
SendChunk = Callable[[list[int]], Awaitable[int]]


async def run_load(
    send: SendChunk,
    indices: list[int],
    per_request: int,
    concurrency: int,
    time_limit_s: float,
    pid: int,
    tokens_by_chunk: dict[int, int],
) -> LoadFigures:
    """Send ``indices`` in requests of ``per_request`` items, ``concurrency`` in flight;
    stops issuing new requests after ``time_limit_s``. Records each request's token count
    under its first index in ``tokens_by_chunk``; a failed request fails the phase."""
    chunks = [indices[i : i + per_request] for i in range(0, len(indices), per_request)]

    async def one(k: int) -> int:
        chunk = chunks[k]
        tokens_by_chunk[chunk[0]] = await send(chunk)
        return len(chunk)

    cpu_before = process_cpu_seconds(pid)
    run = await closed_loop(one, len(chunks), concurrency, time_limit_s)
    cpu = process_cpu_seconds(pid) - cpu_before
    if not run.latencies:
        raise RuntimeError("no request completed")
    tokens = [tokens_by_chunk[c[0]] for c in chunks if c[0] in tokens_by_chunk]
    return LoadFigures(
        items=run.items,
        requests=run.requests,
        seconds=round(run.wall_s, 3),
        items_per_s=round(run.items_per_s, 2),
        p50_ms=round(statistics.median(run.latencies) * 1000, 2),
        p99_ms=round(run.latency(99) * 1000, 2),
        mean_tokens=round(sum(tokens) / max(1, run.items), 1),
        max_tokens_per_request=max(tokens),
        front_end_cpu_ms_per_request=round(cpu / run.requests * 1000, 3),
        front_end_cpu_share=round(cpu / run.wall_s, 3),
    )
