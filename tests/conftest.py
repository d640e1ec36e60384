"""Shared fixtures: tiny reward models built offline once per session, app clients."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from benchkit.tiny_models import build_tiny_reward_model
from rewardcal.api import create_app
from rewardcal.backends.base import RewardBackend
from rewardcal.config import Settings
from tests.fakes import FakeBackend
from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        arch: build_tiny_reward_model(arch, root / f"tiny-{arch}")  # type: ignore[arg-type]
        for arch in ("llama", "qwen2", "bert")
    }


@pytest.fixture(scope="session")
def bert_tokenizer(tiny_models: dict[str, Path]) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models["bert"])


def wait_ready(client: TestClient, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get("/ready")
        if response.status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError(f"service not ready: {client.get('/ready').text}")


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[AppFactory]:
    """Build an in-process app (fresh metrics registry) and return a started TestClient."""
    clients: list[TestClient] = []

    def factory(
        model_path: Path,
        *,
        backend: RewardBackend | None = None,
        wait: bool = True,
        **overrides: Any,
    ) -> TestClient:
        overrides.setdefault("state_dir", tmp_path / "state")
        settings = Settings(**overrides)
        artifacts = backend.artifacts if isinstance(backend, FakeBackend) else None
        app = create_app(
            settings,
            model_path,
            backend=backend,
            registry=CollectorRegistry(),
            artifacts=artifacts,
        )
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        if wait:
            wait_ready(client)
        return client

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def fake_backend(bert_tokenizer: Any) -> FakeBackend:
    return FakeBackend(bert_tokenizer)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free 127.0.0.1 port (AOF on), stopped after the test."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()
