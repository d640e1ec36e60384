"""Several rewardcal processes (replicas, and workers of one process) on one real Redis:
the same version means the same curve everywhere, and metrics add up across workers."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.redis_server import RedisServer
from tests.serve_process import rewardcal_process
from tests.traffic import alpaca_items

pytestmark = pytest.mark.slow


@contextmanager
def serve(model: Path, tmp: Path, redis_url: str, *extra: str) -> Iterator[str]:
    args = [
        "--model-path",
        str(model),
        "--calibration-store",
        redis_url,
        "--calibration-min-samples",
        "60",
        "--calibration-refit-every",
        "60",
        *extra,
    ]
    with rewardcal_process(args, tmp) as base:
        yield base


def _score(base: str, items: list[dict[str, str]]) -> dict[str, Any]:
    body = {"items": items, "calibration_group": "run"}
    response = httpx.post(f"{base}/v1/rewards", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_replicas_serve_one_curve(
    tiny_models: dict[str, Path], redis_server: RedisServer, tmp_path: Path
) -> None:
    """Three replicas on one Redis, interleaved traffic: every response that carries the
    same curve version removes the same bias for the same length, on every replica."""
    items = alpaca_items(240)
    with ExitStack() as stack:
        bases = [
            stack.enter_context(serve(tiny_models["bert"], tmp_path, redis_server.url))
            for _ in range(3)
        ]
        bias_by_version: dict[tuple[int, float], set[float]] = {}
        versions: set[int] = set()
        for round_ in range(12):
            for i, base in enumerate(bases):
                start = (round_ * 3 + i) * 6 % len(items)
                out = _score(base, items[start : start + 6])
                version = out["calibration"]["version"]
                versions.add(version)
                for datum in out["data"]:
                    key = (version, datum["features"]["chars"])
                    bias_by_version.setdefault(key, set()).add(round(datum["bias"], 12))
            time.sleep(0.2)
        # Same text scored on every replica once a curve exists: the same reward.
        deadline = time.monotonic() + 10
        while True:
            outs = [_score(base, items[:5]) for base in bases]
            if len({o["calibration"]["version"] for o in outs}) == 1:
                break
            assert time.monotonic() < deadline, "replicas did not converge on one version"
            time.sleep(0.2)
        rewards = [[d["reward"] for d in o["data"]] for o in outs]
        assert rewards[0] == rewards[1] == rewards[2]
        assert outs[0]["calibration"]["version"] >= 1
    assert max(versions) >= 2
    assert all(len(biases) == 1 for biases in bias_by_version.values()), bias_by_version


def test_workers_share_the_port_the_curve_and_the_metrics(
    tiny_models: dict[str, Path], redis_server: RedisServer, tmp_path: Path
) -> None:
    items = alpaca_items(100)
    with serve(tiny_models["bert"], tmp_path, redis_server.url, "--workers", "2") as base:
        # /ready answered by one worker; the other may still be loading its model (503).
        deadline = time.monotonic() + 60
        while not all(httpx.get(f"{base}/ready").status_code == 200 for _ in range(10)):
            assert time.monotonic() < deadline, "both workers did not become ready"
            time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=60) as client:
            for i in range(40):
                fresh = httpx.post(  # new connections spread over both workers
                    f"{base}/v1/rewards",
                    json={"items": items[i * 2 : i * 2 + 2], "calibration_group": "run"},
                    timeout=60,
                )
                assert fresh.status_code == 200
            metrics = client.get("/metrics").text
    served = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('rewardcal_requests_total{route="/v1/rewards",status="200"}')
    ]
    assert served == [40.0], metrics  # both workers' counters, added up
    assert "rewardcal_calibration_store_up 1.0" in metrics


def test_workers_need_a_shared_store() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rewardcal.cli", "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "workers > 1 needs a shared calibration store" in out.stderr
