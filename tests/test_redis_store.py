"""The shared calibration store against a real redis-server: one curve for every process,
versions assigned atomically, one refit at a time, and scoring that survives Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from rewardcal.calibration.config import StreamConfig
from rewardcal.calibration.curve import fit_curve
from rewardcal.calibration.redis_store import RedisCalibrationEngine
from rewardcal.calibration.stream import CalibrationStatus
from rewardcal.errors import ServiceError
from rewardcal.metrics import CalibrationMetrics
from tests.conftest import AppFactory
from tests.fakes import LengthBiasedBackend
from tests.redis_server import RedisServer
from tests.traffic import alpaca_items

MODEL = "rm"
CONFIG = StreamConfig(min_samples=50, refit_every=50, refit_interval_s=3600, window=400)


def _features(n: int, seed: int) -> tuple[list[dict[str, float]], list[float]]:
    rng = np.random.default_rng(seed)
    chars = rng.integers(10, 2000, n).astype(float)
    raw = 0.002 * chars + rng.normal(0, 0.3, n)
    features = [{"chars": c, "tokens": c / 4, "markdown": 0.0} for c in chars]
    return features, raw.tolist()


@pytest.fixture
async def engines(redis_server: RedisServer) -> AsyncIterator[list[RedisCalibrationEngine]]:
    started = []
    for _ in range(2):
        engine = RedisCalibrationEngine(
            CONFIG,
            redis_server.url,
            max_groups=3,
            lock_ttl_s=1.0,
            metrics=CalibrationMetrics(CollectorRegistry()),
            served_models=[MODEL],
        )
        await engine.start()
        started.append(engine)
    try:
        yield started
    finally:
        for engine in started:
            await engine.stop()


async def _eventually(check: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def _observe(engine: RedisCalibrationEngine, group: str, n: int, seed: int) -> None:
    await engine.ensure(MODEL, group)
    features, raw = _features(n, seed)
    engine.record(MODEL, group, features, raw, raw, observe=True)


async def test_every_process_serves_the_same_curve(engines: list[RedisCalibrationEngine]) -> None:
    a, b = engines
    await _observe(a, "run", 40, seed=1)
    await _observe(b, "run", 40, seed=2)  # together past min_samples: one shared window
    await _eventually(lambda: a.current(MODEL, "run").version >= 1, timeout_s=10)
    await _eventually(lambda: b.current(MODEL, "run").version == a.current(MODEL, "run").version)
    view_a, view_b = a.current(MODEL, "run"), b.current(MODEL, "run")
    assert view_a.status == view_b.status == CalibrationStatus.CALIBRATED
    grid = [{"chars": c, "tokens": 0.0, "markdown": 0.0} for c in (10.0, 500.0, 1999.0)]
    assert view_a.apply(grid, [0.0] * 3) == view_b.apply(grid, [0.0] * 3)
    assert view_a.curve is not None and view_a.curve.stats.samples == 80
    # More observations from both: versions go up by one per fit, fleet-wide.
    versions = [view_a.version]
    for seed in range(3, 6):
        await _observe(a if seed % 2 else b, "run", 60, seed=seed)
        await _eventually(lambda v=versions[-1]: a.current(MODEL, "run").version > v, 10)
        versions.append(a.current(MODEL, "run").version)
    assert versions == list(range(versions[0], versions[0] + len(versions)))
    await _eventually(lambda: b.current(MODEL, "run").version == versions[-1])
    window = (await b.get(MODEL, "run")).window_samples
    assert window == 260  # 80 + 3 x 60, under the 400 window


async def test_operations_and_limits_act_fleet_wide(engines: list[RedisCalibrationEngine]) -> None:
    a, b = engines
    await _observe(a, "g", 80, seed=1)
    await _eventually(lambda: a.current(MODEL, "g").version >= 1, 10)
    await a.freeze(MODEL, "g")
    await _eventually(lambda: b.current(MODEL, "g").status == CalibrationStatus.FROZEN)
    await b.unfreeze(MODEL, "g")
    await _eventually(lambda: a.current(MODEL, "g").status == CalibrationStatus.CALIBRATED)
    exported = a.current(MODEL, "g").curve
    assert exported is not None
    imported = await b.import_curve(MODEL, "copy", exported, None, freeze=True)
    assert imported.view().version == 1
    await _eventually(lambda: a.current(MODEL, "copy", create=False).version == 1)
    before = a.current(MODEL, "g").version
    await a.reset(MODEL, "g")
    await _eventually(lambda: b.current(MODEL, "g").status == CalibrationStatus.WARMING_UP)
    # The group limit (3) is fleet-wide; reset freed "g"'s slot.
    await _observe(a, "x", 1, seed=1)
    await _observe(b, "y", 1, seed=1)
    with pytest.raises(ServiceError, match="too many calibration groups"):
        await a.ensure(MODEL, "z")
    assert await b.remove(MODEL, "x")
    await a.ensure(MODEL, "z")
    await _eventually(lambda: a.find(MODEL, "x") is None)
    assert await a.remove(MODEL, "z")
    await _observe(a, "g", 80, seed=9)
    await _eventually(lambda: b.current(MODEL, "g").version > before, 10)


async def test_a_dead_refit_holder_is_replaced_and_cannot_publish(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A process is killed (SIGKILL) in the middle of a fit; another takes the refit over
    once the lock expires, and versions stay monotonic."""
    script = tmp_path / "slow_fitter.py"
    script.write_text(
        f"""
import asyncio, sys, time
sys.path.insert(0, {str(Path.cwd())!r})
from rewardcal.calibration.config import StreamConfig
from rewardcal.calibration.curve import fit_curve
from rewardcal.calibration.redis_store import RedisCalibrationEngine

def slow_fit(*args):
    print("fitting", flush=True)
    time.sleep(60)
    return fit_curve(*args)

async def main():
    engine = RedisCalibrationEngine(StreamConfig(min_samples=50, refit_every=50,
        refit_interval_s=3600, window=400), {redis_server.url!r}, lock_ttl_s=1.0,
        fit=slow_fit, served_models=["rm"])
    await engine.start()
    await asyncio.sleep(60)

asyncio.run(main())
"""
    )
    survivor = RedisCalibrationEngine(
        CONFIG, redis_server.url, lock_ttl_s=1.0, served_models=[MODEL], poll_interval_s=3600
    )
    await survivor.start()
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": "."}
    )
    try:
        await _observe(survivor, "run", 80, seed=1)
        await survivor._flush()  # noqa: SLF001 - the survivor's own loop is parked
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.strip() == b"fitting"  # the other process holds the lock, mid-fit
        client = redis_server.client()
        assert any(k.endswith(b":lock") for k in client.keys("rewardcal:g:*"))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stream = await survivor.get(MODEL, "run")
        refitted = await survivor.refit(MODEL, "run")  # waits for the dead holder's TTL
        assert refitted.view().version == 1
        await _observe(survivor, "run", 60, seed=2)
        await survivor._flush()  # noqa: SLF001
        await survivor._sync(MODEL, "run")  # noqa: SLF001
        assert (await survivor.refit(MODEL, "run")).view().version == 2
        assert stream is refitted
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await survivor.stop()


async def test_a_stale_lock_holder_cannot_publish(engines: list[RedisCalibrationEngine]) -> None:
    a, b = engines
    released = asyncio.Event()

    def blocking_fit(*args: Any) -> Any:
        asyncio.run_coroutine_threadsafe(released.wait(), loop).result(30)
        return fit_curve(*args)

    loop = asyncio.get_running_loop()
    a._fit = blocking_fit  # noqa: SLF001 - a fit that outlives its lock
    a.lock_ttl_s = 0.3
    a._renew = _no_renewal  # type: ignore[method-assign]  # noqa: SLF001 - a holder that stalls
    await _observe(b, "run", 80, seed=1)
    await b._flush()  # noqa: SLF001
    await a._sync(MODEL, "run")  # noqa: SLF001
    stalled = asyncio.create_task(a._refit(a.stream(MODEL, "run")))  # noqa: SLF001
    try:
        await asyncio.sleep(0.6)  # its lock expired, unrenewed
        version = (await b.refit(MODEL, "run")).view().version
        assert version >= 1
    finally:
        released.set()  # never leave the fitting thread blocked
    assert await stalled is None  # refused: "lock lost"
    await _eventually(lambda: a.current(MODEL, "run").version == version)
    assert (await a.get(MODEL, "run")).view().version == version


async def _no_renewal(*_args: Any) -> None:
    await asyncio.sleep(3600)


def test_scoring_survives_redis_going_away_and_coming_back(
    make_client: AppFactory,
    tiny_models: dict[str, Path],
    bert_tokenizer: Any,
    redis_server: RedisServer,
) -> None:
    client = make_client(
        tiny_models["bert"],
        backend=LengthBiasedBackend(bert_tokenizer),
        calibration_store=redis_server.url,
        calibration_min_samples=50,
        calibration_refit_every=50,
        calibration_store_stale_after_s=0.5,
    )
    items = alpaca_items(400)

    def score(chunk: list[dict[str, str]]) -> dict[str, Any]:
        response = client.post("/v1/rewards", json={"items": chunk, "calibration_group": "run"})
        assert response.status_code == 200, response.text
        return dict(response.json())

    score(items[:100])
    deadline = time.monotonic() + 10
    while score(items[100:110])["calibration"]["version"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    version = score(items[:1])["calibration"]["version"]
    redis_server.stop()
    time.sleep(0.8)
    for start in range(110, 310, 20):  # no scoring request fails while Redis is down
        out = score(items[start : start + 20])
    assert out["calibration"]["status"] == "stale" and out["calibration"]["version"] == version
    metrics = client.get("/metrics").text
    assert "rewardcal_calibration_store_up 0.0" in metrics
    assert "rewardcal_calibration_store_buffered 2" in metrics  # 200 waiting
    refused = client.post("/v1/calibration/run/reset")
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert client.get("/ready").status_code == 200

    redis_server.start()  # same port, same AOF
    deadline = time.monotonic() + 15
    while True:
        detail = client.get("/v1/calibration/run")
        if detail.status_code == 200 and detail.json()["window_samples"] >= 310:
            break
        assert time.monotonic() < deadline, detail.text
        time.sleep(0.1)
    deadline = time.monotonic() + 15
    while score(items[:1])["calibration"]["version"] <= version:  # the curve catches up
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert score(items[:1])["calibration"]["status"] == "calibrated"
    assert "rewardcal_calibration_store_up 1.0" in client.get("/metrics").text


async def test_idle_groups_are_evicted_fleet_wide(engines: list[RedisCalibrationEngine]) -> None:
    a, b = engines
    await _observe(a, "old", 5, seed=1)
    await _observe(b, "new", 5, seed=2)
    await a._flush()  # noqa: SLF001
    await b._flush()  # noqa: SLF001
    groups_key = a._keys(MODEL, "").groups  # noqa: SLF001
    await a._client.zadd(groups_key, {"old": time.time() - 7200})  # noqa: SLF001
    a.idle_ttl_s = 3600
    await a._evict_idle()  # noqa: SLF001
    assert await a._client.zrange(groups_key, 0, -1) == [b"new"]  # noqa: SLF001
    await _eventually(lambda: b.find(MODEL, "old") is None)
    assert a.find(MODEL, "old") is None and b.find(MODEL, "new") is not None


async def test_the_group_limit_holds_while_redis_is_down(
    engines: list[RedisCalibrationEngine], redis_server: RedisServer
) -> None:
    a, _ = engines
    await _observe(a, "known", 1, seed=1)
    redis_server.stop()
    await _observe(a, "new-while-down", 1, seed=1)  # scoring goes on: a local group
    await _observe(a, "third", 1, seed=1)
    with pytest.raises(ServiceError, match="too many calibration groups"):
        await a.ensure(MODEL, "fourth")  # but not an unbounded number of them
    await a.ensure(MODEL, "known")
