"""A real ``rewardcal serve`` process on 127.0.0.1 for trainer tests, with calibrated and
frozen groups (a stable curve whose bias is not zero, so calibrated != raw)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _calibrate_and_freeze(base: str, group: str) -> None:
    items = [{"prompt": f"q{i}", "response": "word " * (1 + i % 23)} for i in range(60)]
    for start in (0, 30):
        body = {"items": items[start : start + 30], "calibration_group": group}
        response = httpx.post(f"{base}/v1/rewards", json=body, timeout=60)
        assert response.status_code == 200, response.text
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/v1/calibration/{group}").json()["version"] < 1:
        assert time.monotonic() < deadline, "no curve was fitted"
        time.sleep(0.1)
    assert httpx.post(f"{base}/v1/calibration/{group}/freeze").status_code == 200


@contextmanager
def rewardcal_process(
    args: list[str], tmp: Path, *, headers: dict[str, str] | None = None
) -> Iterator[str]:
    """``rewardcal serve ARGS --port FREE`` as a real process on 127.0.0.1 (state and cache
    under ``tmp``); yields its base URL once /ready answers 200, stops it on exit."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        REWARDCAL_STATE_DIR=str(tmp / f"state-{port}"),
        REWARDCAL_CACHE_DIR=str(tmp / "cache"),
    )
    log_path = tmp / f"server-{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rewardcal.cli", "serve", *args, "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"server exited early:\n{log_path.read_text()}"
            try:
                if httpx.get(f"{base}/ready", headers=headers, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"server not ready:\n{log_path.read_text()}"
            time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def serve(model_path: Path, tmp: Path, groups: tuple[str, ...] = ("default",)) -> Iterator[str]:
    """Start the server (no API keys: OpenRLHF and verl's built-in client send none),
    calibrate and freeze ``groups``, yield its base URL, stop it."""
    args = [
        "--model-path",
        str(model_path),
        "--calibration-min-samples",
        "40",
        "--calibration-refit-every",
        "20",
        "--snapshot-interval-s",
        "3600",
    ]
    with rewardcal_process(args, tmp) as base:
        for group in groups:
            _calibrate_and_freeze(base, group)
        yield base
