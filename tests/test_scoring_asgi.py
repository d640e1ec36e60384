"""The scoring routes' plain-ASGI path answers exactly as FastAPI's own stack does.

Two apps with the same settings and the same (deterministic) backend: one as served (the
fast path in front), one whose middleware stack is FastAPI's alone. Every request, good or
bad, must get the same status, the same body (a /classify id and timestamp aside) and the
same error headers from both; and the fast path must record the same request metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from rewardcal.api import create_app
from rewardcal.api.scoring_asgi import SCORING_ENDPOINTS, ScoringFastPath
from rewardcal.config import Settings
from tests.conftest import wait_ready
from tests.fakes import FakeBackend

KEY = "scoring-key-0123456789"
ITEM = {"prompt": "What is 2+2?", "response": "It is 4."}
GOOD: dict[str, dict[str, Any]] = {
    "/v1/rewards": {"items": [ITEM, {"messages": [{"role": "assistant", "content": "Hi"}]}]},
    "/v1/rewards/compare": {"pairs": [{"prompt": "p", "chosen": "a b c", "rejected": "a"}]},
    "/get_reward": {"query": ["user: hi\nassistant: hello"], "prompts": ["user: hi\n"]},
    "/classify": {"input": ["one text", "two texts here"]},
    "/pooling": {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    },
}


def _bodies(path: str) -> list[bytes | None]:
    good = GOOD[path]
    return [
        json.dumps(dict(good, observe=False)).encode(),
        json.dumps(good).encode(),  # observed: creates the default group on both apps
        json.dumps(dict(good, calibration_group="run-1")).encode(),
        None,  # no body at all
        b"",
        b"{not json",
        b"[1, 2, 3]",
        b'"a string"',
        b"{}",
        b"\xff\xfe\xfa",  # not UTF-8
        json.dumps(dict(good, model="other-model")).encode(),
        json.dumps(dict(good, calibration_group="bad group!")).encode(),
        json.dumps(dict(good, unexpected_field=1)).encode(),
        b'{"input": NaN, "items": NaN, "query": NaN, "pairs": NaN}',
        json.dumps(
            {k: (["\ud83d"] if isinstance(v, list) else v) for k, v in good.items()}
        ).encode(),
        json.dumps(dict(good, observe="yes please")).encode(),
    ]


def _app(model: Path, tokenizer: Any, state: Path, fast: bool, **settings: Any) -> FastAPI:
    app = create_app(
        Settings(state_dir=state, **settings),  # type: ignore[call-arg]
        model,
        backend=FakeBackend(tokenizer),
        registry=CollectorRegistry(),
        artifacts=FakeBackend(tokenizer).artifacts,
    )
    if not fast:
        # FastAPI's own stack: the scoring routes through its router and dependencies.
        app.middleware_stack = FastAPI.build_middleware_stack(app)
    return app


@pytest.fixture
def both(
    tiny_models: dict[str, Path], bert_tokenizer: Any, tmp_path: Path
) -> Iterator[tuple[TestClient, TestClient]]:
    clients = [
        TestClient(
            _app(
                tiny_models["bert"], bert_tokenizer, tmp_path / name, fast, max_items_per_request=4
            ),
            raise_server_exceptions=False,
        )
        for name, fast in (("fast", True), ("fastapi", False))
    ]
    for client in clients:
        client.__enter__()
        wait_ready(client)
    yield clients[0], clients[1]
    for client in clients:
        client.__exit__(None, None, None)


def _comparable(response: Any) -> tuple[int, Any, dict[str, str]]:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict):
        body.pop("id", None)  # /classify, /pooling: a fresh id and timestamp per answer
        body.pop("created", None)
    headers = {
        name: response.headers[name]
        for name in ("content-type", "retry-after", "www-authenticate")
        if name in response.headers
    }
    return response.status_code, body, headers


def test_the_fast_path_serves_every_scoring_route(both: tuple[TestClient, TestClient]) -> None:
    fast, _ = both
    app = fast.app
    assert isinstance(app, FastAPI) and isinstance(app.middleware_stack, ScoringFastPath)
    declared = {
        route.path: route.body_field.field_info.annotation
        for route in app.routes
        if isinstance(route, APIRoute) and "POST" in route.methods and route.body_field
    }
    for path, endpoint in SCORING_ENDPOINTS.items():
        # Each has its declared route (OpenAPI), validating the same request model.
        assert declared[path] is endpoint.request, path


@pytest.mark.parametrize("path", sorted(GOOD))
def test_every_request_is_answered_as_fastapi_answers_it(
    both: tuple[TestClient, TestClient], path: str
) -> None:
    fast, reference = both
    for body in _bodies(path):
        for headers in ({}, {"X-Calibration-Group": "g" * 65}, {"X-Calibration-Group": "hdr"}):
            answers = [
                client.post(path, content=body, headers=headers) for client in (fast, reference)
            ]
            got, expected = (_comparable(a) for a in answers)
            assert got == expected, (path, body, headers)
    # The good request did score (not every answer an error).
    assert fast.post(path, json=GOOD[path]).status_code == 200


def test_keys_too_long_bodies_and_not_ready_are_answered_alike(
    tiny_models: dict[str, Path], bert_tokenizer: Any, tmp_path: Path
) -> None:
    apps = [
        _app(
            tiny_models["bert"],
            bert_tokenizer,
            tmp_path / str(fast),
            fast,
            api_keys=KEY,
            max_body_bytes=4096,
        )
        for fast in (True, False)
    ]
    clients = [TestClient(app, raise_server_exceptions=False) for app in apps]
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        ("/classify", {"input": "x"}, {}),
        ("/classify", {"input": "x"}, {"Authorization": "Bearer wrong"}),
        ("/classify", {"input": "x"}, {"Authorization": f"Basic {KEY}"}),
        ("/classify", {"input": "x"}, {"Authorization": f"Bearer {KEY}"}),
        ("/classify", {"input": "y" * 5000}, {"Authorization": f"Bearer {KEY}"}),
        ("/v1/rewards", {"items": [ITEM] * 5000}, {"Authorization": f"Bearer {KEY}"}),
    ]
    for client in clients:
        client.__enter__()
        _wait_ready_keyed(client)
    try:
        for path, body, headers in requests:
            got, expected = (
                _comparable(client.post(path, json=body, headers=headers)) for client in clients
            )
            assert got == expected, (path, headers)
        # Not ready: a runtime whose model is still loading.
        for app in apps:
            app.state.runtime.ready.clear()
        got, expected = (
            _comparable(
                c.post("/classify", json={"input": "x"}, headers={"Authorization": f"Bearer {KEY}"})
            )
            for c in clients
        )
        assert got == expected and got[0] == 503 and got[2]["retry-after"] == "5"
        for app in apps:
            app.state.runtime.ready.set()
    finally:
        for client in clients:
            client.__exit__(None, None, None)


def _wait_ready_keyed(client: TestClient) -> None:
    deadline = time.monotonic() + 60
    while client.get("/ready", headers={"Authorization": f"Bearer {KEY}"}).status_code != 200:
        assert time.monotonic() < deadline, "service not ready"
        time.sleep(0.02)


def test_request_metrics_name_the_route_and_the_error_type(
    both: tuple[TestClient, TestClient],
) -> None:
    fast, _ = both
    assert fast.post("/classify", json={"input": "x"}).status_code == 200
    assert fast.post("/classify", json={"input": "x", "model": "nope"}).status_code == 404
    assert fast.post("/get_reward", content=b"{").status_code == 400
    metrics = generate_latest(fast.app.state.runtime.metrics.registry).decode()
    assert 'route="/classify",status="200"' in metrics
    assert 'route="/classify",status="404"' in metrics
    assert 'route="/get_reward",status="400"' in metrics
    assert 'rewardcal_errors_total{type="not_found_error"}' in metrics
    # Every answer carries a request id, the client's own when it sent a valid one.
    answer = fast.post("/classify", json={"input": "x"}, headers={"X-Request-ID": "trace-7"})
    assert answer.headers["x-request-id"] == "trace-7"


def test_other_methods_and_paths_still_reach_fastapi(both: tuple[TestClient, TestClient]) -> None:
    fast, _ = both
    assert fast.get("/classify").status_code == 405
    assert fast.post("/classify/", json={"input": "x"}).status_code in (200, 307)
    assert fast.get("/openapi.json").status_code == 200
