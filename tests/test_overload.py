"""Overload without loss, and a graceful drain, against the real server process."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.test_server_process import _free_port, _serve, _stop, _wait_ready

pytestmark = pytest.mark.slow

CLIENTS = 500


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match
    return int(match.group(1))


def _requests_answered(metrics: str, route: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    pattern = re.compile(
        rf'rewardcal_requests_total{{route="{re.escape(route)}",status="(\d+)"}} (\S+)'
    )
    for line in metrics.splitlines():
        match = pattern.match(line)
        if match:
            counts[match.group(1)] = float(match.group(2))
    return counts


async def _storm(base: str, clients: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:

        async def one(i: int) -> httpx.Response:
            body = {"items": [{"prompt": f"question {i}", "response": "an answer " * (1 + i % 40)}]}
            return await client.post("/v1/rewards", json=body)

        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(clients))), 240)


def test_500_concurrent_clients_get_200_or_503_and_nothing_accepted_is_lost(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(
        [
            "--model-path",
            str(tiny_models["bert"]),
            "--port",
            str(port),
            "--max-queue",
            "64",
            "--max-batch-size",
            "16",
            "--max-items-per-request",
            "16",
            "--max-wait-ms",
            "2",
            "--retry-after-s",
            "2",
        ],
        tmp_path,
    )
    try:
        _wait_ready(base, proc)
        baseline_rss = _rss_kib(proc.pid)
        responses = asyncio.run(_storm(base, CLIENTS))
        peak_rss = _rss_kib(proc.pid)
        assert proc.poll() is None, "the server died under load"

        statuses = [r.status_code for r in responses]
        accepted = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 503]
        assert len(accepted) + len(refused) == CLIENTS, sorted(set(statuses))
        assert accepted and refused, "the storm should both succeed and overflow"
        for response in refused:
            assert response.headers["retry-after"] == "2"
            assert response.json()["error"]["type"] == "overloaded_error"
        for response in accepted:
            datum = response.json()["data"][0]
            assert datum["raw_reward"] == datum["raw_reward"]  # a real number, not NaN

        answered = _requests_answered(httpx.get(f"{base}/metrics").text, "/v1/rewards")
        assert answered.get("200") == len(accepted) and answered.get("503") == len(refused)
        window = httpx.get(f"{base}/v1/calibration/default").json()["window_samples"]
        assert window == len(accepted)  # every accepted request was scored and observed
        # Bounded memory: a bounded queue, not a pile of 500 requests' tensors.
        assert peak_rss - baseline_rss < 400 * 1024, (baseline_rss, peak_rss)
        assert httpx.get(f"{base}/ready").status_code == 200  # still serving
    finally:
        _stop(proc)


def test_sigterm_drains_in_flight_requests(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    # One input per forward pass: 8 requests of 48 long items keep the server busy a while.
    proc = _serve(
        [
            "--model-path",
            str(tiny_models["llama"]),
            "--port",
            str(port),
            "--max-batch-size",
            "1",
            "--max-items-per-request",
            "48",
        ],
        tmp_path,
    )
    try:
        _wait_ready(base, proc)

        async def busy() -> list[int]:
            async with httpx.AsyncClient(base_url=base, timeout=120) as client:
                body = {
                    "items": [{"prompt": "p", "response": "long answer " * 120}] * 48,
                    "calibration_group": "drain",
                }
                tasks = [
                    asyncio.ensure_future(client.post("/v1/rewards", json=body)) for _ in range(8)
                ]
                await asyncio.sleep(1.0)
                assert not all(t.done() for t in tasks), "requests finished before SIGTERM"
                proc.send_signal(signal.SIGTERM)
                return [r.status_code for r in await asyncio.gather(*tasks)]

        started = time.monotonic()
        statuses = asyncio.run(busy())
        assert statuses == [200] * 8
        proc.wait(timeout=60)
        assert time.monotonic() - started < 60
    finally:
        if proc.poll() is None:
            _stop(proc)
    from tests.test_server_process import _snapshot_of

    # Every drained request was observed and made it into the final snapshot.
    assert _snapshot_of(tmp_path / "state", "drain")[1] == 8 * 48
