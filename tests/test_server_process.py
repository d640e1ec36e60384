"""The real `rewardcal serve` process over real HTTP on 127.0.0.1, called as trainers call it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        REWARDCAL_STATE_DIR=str(tmp_path / "state"),
        REWARDCAL_CACHE_DIR=str(tmp_path / "cache"),
    )
    return env


def _serve(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rewardcal.cli", "serve", *args],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_ready(base: str, proc: subprocess.Popen[str], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"server exited early: {proc.stdout.read() if proc.stdout else ''}"
            )
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("server did not become ready")


@pytest.fixture
def server(tiny_models: dict[str, Path], tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    proc = _serve(["--model-path", str(tiny_models["llama"]), "--port", str(port)], tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def openrlhf_request_api_wrapper(url: str, data: dict, score_key: str = "rewards") -> list[float]:
    """What OpenRLHF's remote reward client does: POST json, read response[score_key]."""
    response = httpx.post(url, json=data, headers={"Content-Type": "application/json"}, timeout=180)
    response.raise_for_status()
    body = response.json()
    assert score_key in body, f"{score_key} not in {body}"
    return list(body[score_key])


def test_openrlhf_and_verl_clients_against_the_real_process(server: str) -> None:
    prompts = [
        "<s><|user|>\nWhat is 2+2?</s>\n<|assistant|>\n",
        "<s><|user|>\nName a colour.</s>\n<|assistant|>\n",
    ]
    queries = [prompts[0] + "4.</s>", prompts[1] + "Blue, like the sky on a clear day.</s>"]
    # OpenRLHF v0.8: one request for the batch.
    rewards = openrlhf_request_api_wrapper(
        f"{server}/get_reward", {"query": queries, "prompts": prompts, "labels": ["4", "blue"]}
    )
    assert len(rewards) == 2
    full = httpx.post(
        f"{server}/get_reward", json={"query": queries, "prompts": prompts, "labels": ["4", "blue"]}
    ).json()
    assert full["scores"] == rewards
    # query[len(prompt):] without the EOS after it: the length the messages path measures.
    assert full["extra_logs"]["response_chars"] == [
        len("4."),
        len("Blue, like the sky on a clear day."),
    ]
    assert full["extra_logs"]["raw_reward"] == rewards  # uncalibrated until calibration lands
    # OpenRLHF v0.9+: one sample per request, scored the same.
    singles = [
        openrlhf_request_api_wrapper(
            f"{server}/get_reward",
            {"query": [q], "prompts": [p], "labels": [None]},
            score_key="scores",
        )[0]
        for q, p in zip(queries, prompts, strict=True)
    ]
    assert singles == pytest.approx(rewards, abs=1e-5)

    # verl: vLLM's /classify with activation off, reading data[-1]["probs"][-1].
    payload = {"model": "tiny-llama", "input": queries[1], "activation": False}
    response = httpx.post(f"{server}/classify", json=payload, timeout=60)
    assert response.status_code == 200
    score = response.json()["data"][-1]["probs"][-1]
    assert score == pytest.approx(rewards[1], abs=1e-5)

    metrics = httpx.get(f"{server}/metrics").text
    assert 'rewardcal_requests_total{route="/get_reward",status="200"}' in metrics


def test_bad_settings_fail_with_one_line(tmp_path: Path) -> None:
    proc = _serve(
        ["--max-batch-size", "4096", "--max-queue", "16", "--max-items-per-request", "8"], tmp_path
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines == ["rewardcal: invalid settings: max_batch_size (4096) exceeds max_queue (16)"]


def test_model_that_cannot_load_exits_non_zero_with_one_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    proc = _serve(["--model-path", str(broken), "--port", str(_free_port())], tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "rewardcal: model failed to load: cannot load reward model from" in out
    assert "Traceback" not in out


def _calibration_state(base: str, group: str) -> dict:
    return httpx.get(f"{base}/v1/calibration/{group}", timeout=10).json()


def _snapshot_of(state_dir: Path, group: str) -> tuple[int, int]:
    """(version, window size) recorded in the stream's snapshot file."""
    from rewardcal.calibration.persistence import decode_snapshot

    files = [p for p in (state_dir / "calibration").glob("*.snapshot") if f"__{group}-" in p.name]
    assert len(files) == 1, files
    snap = decode_snapshot(files[0].read_bytes())
    return int(snap.meta["version"]), len(snap.raw)


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_sigkill_restart_serves_the_last_snapshot_and_corruption_is_skipped(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    args = [
        "--model-path",
        str(tiny_models["llama"]),
        "--port",
        str(port),
        "--calibration-min-samples",
        "40",
        "--calibration-refit-every",
        "20",
        "--snapshot-interval-s",
        "0.3",
    ]
    state_dir = tmp_path / "state"
    proc = _serve(args, tmp_path)
    try:
        _wait_ready(base, proc)
        items = [{"prompt": f"q{i}", "response": "word " * (1 + i % 37)} for i in range(120)]
        for start in range(0, 120, 30):
            body = {"items": items[start : start + 30], "calibration_group": "run"}
            assert httpx.post(f"{base}/v1/rewards", json=body, timeout=60).status_code == 200
        deadline = time.monotonic() + 30
        while True:  # wait until the refits settled and the snapshot caught up
            state = _calibration_state(base, "run")
            try:
                on_disk = _snapshot_of(state_dir, "run")
            except AssertionError:
                on_disk = (-1, -1)
            if state["version"] >= 1 and on_disk == (state["version"], state["window_samples"]):
                break
            assert time.monotonic() < deadline, (state, on_disk)
            time.sleep(0.2)
    finally:
        _stop(proc, signal.SIGKILL)

    proc = _serve(args, tmp_path)
    try:
        _wait_ready(base, proc)
        state = _calibration_state(base, "run")
        assert (state["version"], state["window_samples"]) == on_disk
        assert state["status"] == "calibrated"
    finally:
        _stop(proc)

    # Damage the snapshot: the service still starts, warns, and begins from scratch.
    snapshot = next((state_dir / "calibration").glob("*.snapshot"))
    snapshot.write_bytes(snapshot.read_bytes()[:100])
    proc = _serve(args, tmp_path)
    try:
        _wait_ready(base, proc)
        listing = httpx.get(f"{base}/v1/calibration", timeout=10).json()["data"]
        assert listing == []
    finally:
        out = _stop(proc)
    assert "skipping calibration snapshot" in out and "checksum mismatch" in out, out


def test_sigterm_writes_the_final_snapshot(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    args = [
        "--model-path",
        str(tiny_models["bert"]),
        "--port",
        str(port),
        "--snapshot-interval-s",
        "3600",
    ]
    proc = _serve(args, tmp_path)
    try:
        _wait_ready(base, proc)
        body = {
            "items": [{"prompt": "p", "response": "r" * n} for n in range(1, 11)],
            "calibration_group": "t",
        }
        assert httpx.post(f"{base}/v1/rewards", json=body, timeout=60).status_code == 200
    finally:
        _stop(proc)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why.
    assert proc.returncode in (0, -signal.SIGTERM)
    assert _snapshot_of(tmp_path / "state", "t") == (0, 10)
