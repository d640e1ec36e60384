"""Server processes load the calibration kernels, then freeze the start-up heap."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from rewardcal.api import create_app
from rewardcal.config import Settings
from tests.fakes import FakeBackend


def test_a_server_process_freezes_its_heap_once_the_model_is_up(
    tiny_models: dict[str, Path], bert_tokenizer: Any, tmp_path: Path
) -> None:
    """Full collections otherwise walk every start-up object (200-430 ms each under load,
    bench/RESULTS.md); the kernels load first so that they are frozen too."""
    from rewardcal_kernels import _lowess_numba

    backend = FakeBackend(bert_tokenizer)
    app = create_app(
        Settings(state_dir=tmp_path),  # type: ignore[call-arg]
        tiny_models["bert"],
        backend=backend,
        registry=CollectorRegistry(),
        artifacts=backend.artifacts,
        freeze_heap=True,
    )
    assert gc.get_freeze_count() == 0
    try:
        with TestClient(app) as client:
            deadline = time.monotonic() + 60
            while gc.get_freeze_count() == 0:
                assert time.monotonic() < deadline, "the heap was never frozen"
                time.sleep(0.05)
            assert client.get("/ready").status_code == 200
            assert _lowess_numba._pass is not None  # compiled (or loaded) before the freeze
            assert client.post("/classify", json={"input": "x"}).status_code == 200
    finally:
        gc.unfreeze()  # the test process goes on collecting as before
