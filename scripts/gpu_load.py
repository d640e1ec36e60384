"""HTTP load against one server process, and that process's own CPU time (gpu_check.py).

Profile-free: which items, how many and for how long is the caller's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, all its threads (not its children: vLLM's engine
    core is a child, so this is the front end alone)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        stat = handle.read()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
Send = Callable[[Any, list[int]], Awaitable[int]]


async def run_load(
    send: Send,
    client: Any,
    indices: list[int],
    per_request: int,
    concurrency: int,
    time_limit_s: float,
    pid: int,
    tokens_by_chunk: dict[int, int],
) -> LoadFigures:
    """Send ``indices`` in requests of ``per_request`` items, ``concurrency`` in flight;
    stops issuing new requests after ``time_limit_s``. Records each request's token count
    under its first index in ``tokens_by_chunk``."""
    chunks = [indices[i : i + per_request] for i in range(0, len(indices), per_request)]
    latencies: list[float] = []
    done_items = 0
    gate = asyncio.Semaphore(concurrency)
    cpu_before = process_cpu_seconds(pid)
    started = time.monotonic()

    async def one(chunk: list[int]) -> None:
        nonlocal done_items
        async with gate:
            if time.monotonic() - started > time_limit_s:
                return
            t0 = time.monotonic()
            tokens_by_chunk[chunk[0]] = await send(client, chunk)
            latencies.append(time.monotonic() - t0)
            done_items += len(chunk)

    await asyncio.gather(*(one(c) for c in chunks))
    elapsed = time.monotonic() - started
    cpu = process_cpu_seconds(pid) - cpu_before
    if not latencies:
        raise RuntimeError("no request completed")
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    done_chunks = [c for c in chunks if c[0] in tokens_by_chunk]
    tokens = [tokens_by_chunk[c[0]] for c in done_chunks]
    return LoadFigures(
        items=done_items,
        requests=len(latencies),
        seconds=round(elapsed, 3),
        items_per_s=round(done_items / elapsed, 2),
        p50_ms=round(statistics.median(ordered) * 1000, 2),
        p99_ms=round(p99 * 1000, 2),
        mean_tokens=round(sum(tokens) / max(1, done_items), 1),
        max_tokens_per_request=max(tokens),
        front_end_cpu_ms_per_request=round(cpu / len(latencies) * 1000, 3),
        front_end_cpu_share=round(cpu / elapsed, 3),
    )


@contextlib.contextmanager
def server_process(command: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child server in its own process group, killed as a group on the way out."""
    env = dict(os.environ)
    env.setdefault("VLLM_HOST_IP", "127.0.0.1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def wait_healthy(
    base: str, path: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> float:
    import httpx

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() - started < timeout_s:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"server exited with {proc.returncode}; log tail:\n{tail}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(base + path)).status_code == 200:
                    return time.monotonic() - started
            await asyncio.sleep(0.5)
    raise StepTimeout(f"{base}{path} not ready after {timeout_s:.0f} s (log: {log})")
