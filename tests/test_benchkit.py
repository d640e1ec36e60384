"""benchkit: the servers and load of the benchmarks and the GPU check behave as they say."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchkit.load import closed_loop, percentile
from benchkit.processes import NotReady, ServerExited, ServerProcess, free_port, stop_all
from benchkit.texts import distinct_items
from rewardcal.datasets import alpacaeval_items

# A "server" that starts a second process in its group and then sleeps: stop() must end both.
PARENT_AND_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2] != "Z"  # a zombie is dead, only not yet reaped


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    server = ServerProcess([sys.executable, "-c", PARENT_AND_CHILD], tmp_path / "s.log").start()
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "s.log").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int((tmp_path / "s.log").read_text().split()[0])
        assert _alive(child) and server.cpu_seconds() >= 0.0
    finally:
        server.stop(grace_s=5)
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
    assert not server.running()


def test_readiness_waits_for_200_and_reports_a_server_that_died(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    with ServerProcess(argv, tmp_path / "http.log") as server:
        assert server.wait_ready(f"http://127.0.0.1:{port}/", 60, in_a_row=3) > 0
    dying = [sys.executable, "-c", "import sys; print('bad flag --x'); sys.exit(3)"]
    with ServerProcess(dying, tmp_path / "dies.log", label="dies") as server:
        with pytest.raises(ServerExited, match=r"dies exited with 3[\s\S]*bad flag --x"):
            server.wait_ready(f"http://127.0.0.1:{free_port()}/ready", 60)


def test_readiness_gives_up_at_its_timeout(tmp_path: Path) -> None:
    silent = [sys.executable, "-c", "import time; time.sleep(600)"]
    with ServerProcess(silent, tmp_path / "silent.log") as server:
        started = time.monotonic()
        with pytest.raises(NotReady):
            server.wait_ready(f"http://127.0.0.1:{free_port()}/ready", 1.0)
        assert time.monotonic() - started < 10


def test_stop_all_ends_servers_left_running(tmp_path: Path) -> None:
    silent = [sys.executable, "-c", "import time; time.sleep(600)"]
    servers = [ServerProcess(silent, tmp_path / f"{k}.log").start() for k in range(2)]
    stop_all()
    assert not any(s.running() for s in servers)


def test_closed_loop_counts_items_errors_and_keeps_clients_busy() -> None:
    in_flight, most = 0, 0

    async def send(i: int) -> int:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        if i % 5 == 4:
            raise ConnectionError("refused")
        return 3

    run = asyncio.run(closed_loop(send, 20, 4, 60, tolerate=(ConnectionError,)))
    assert (run.requests, run.errors, run.items, len(run.latencies)) == (20, 4, 48, 16)
    assert most == 4 and not run.capped
    assert run.items_per_s == pytest.approx(48 / run.wall_s)
    assert 0.01 <= run.latency(50) <= run.latency(99)


def test_closed_loop_stops_sending_at_its_time_limit_and_says_so() -> None:
    async def send(i: int) -> int:
        await asyncio.sleep(0.05)
        return 1

    run = asyncio.run(closed_loop(send, 10_000, 2, 0.3))
    assert run.capped and 4 <= run.requests < 40


def test_closed_loop_raises_an_untolerated_failure_as_itself() -> None:
    async def send(i: int) -> int:
        await asyncio.sleep(0)
        if i == 3:
            raise RuntimeError("/classify answered 500")
        return 1

    with pytest.raises(RuntimeError, match="answered 500"):
        asyncio.run(closed_loop(send, 50, 4, 60))


def test_percentile_interpolates_like_numpy() -> None:
    values = list(np.random.default_rng(0).exponential(1.0, 37))
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert np.isnan(percentile([], 50))


def test_distinct_items_never_repeat_a_pair_even_beyond_the_file() -> None:
    rows = len(alpacaeval_items())
    items = distinct_items(rows + 500)
    pairs = {(item["prompt"], item["response"]) for item in items}
    assert len(pairs) == rows + 500
    longest = distinct_items(10, longest_first=True)
    sizes = [len(i["prompt"]) + len(i["response"]) for i in longest]
    assert sizes == sorted(sizes, reverse=True)


def test_a_light_twin_tokenizes_as_its_model_with_one_small_layer(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """bench/frontend.py serves the twin so that front ends do the original's work
    (tokenizer, chat template, context) while the engine answers at once."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from benchkit.tiny_models import build_light_twin

    original = tiny_models["bert"]
    twin = build_light_twin(original, tmp_path / "twin")
    text = "What is 2+2? It is 4, as anyone can count."
    assert AutoTokenizer.from_pretrained(twin)(text) == AutoTokenizer.from_pretrained(original)(
        text
    )
    config, base = AutoConfig.from_pretrained(twin), AutoConfig.from_pretrained(original)
    assert config.num_hidden_layers == 1 and config.hidden_size == 64
    assert config.max_position_embeddings == base.max_position_embeddings
    assert AutoModelForSequenceClassification.from_pretrained(twin).num_labels == 1
    with pytest.raises(ValueError, match="BERT models only"):
        build_light_twin(tiny_models["llama"], tmp_path / "llama-twin")
