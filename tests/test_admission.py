"""Admission: one permit per request before any work, 503 at once when full, given back
however the request ends; the same path for every backend."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from rewardcal.calibration import CalibrationEngine
from rewardcal.calibration.config import StreamConfig
from rewardcal.errors import Overloaded
from rewardcal.pipeline.admission import Admission
from rewardcal.scheduler import BatchPolicy, Scheduler
from rewardcal.scoring import ScoreInput, ScoringService
from tests.fakes import FakeBackend


def test_a_permit_beyond_capacity_is_refused_at_once_with_retry_after() -> None:
    admission = Admission(4, retry_after_s=3)
    with admission.permit(3):
        with pytest.raises(Overloaded) as refused:
            with admission.permit(2):
                pass
        assert admission.in_flight == 3
    assert refused.value.status_code == 503
    assert refused.value.headers["Retry-After"] == "3"
    with admission.permit(4):  # given back when the request ended
        assert admission.in_flight == 4
    assert admission.in_flight == 0


def test_a_permit_is_given_back_when_the_request_fails() -> None:
    admission = Admission(2)
    with pytest.raises(RuntimeError), admission.permit(2):
        raise RuntimeError("tokenization failed")
    assert admission.in_flight == 0


def _scoring(
    tokenizer: Any, backend: FakeBackend, capacity: int
) -> tuple[ScoringService, Scheduler]:
    scheduler = Scheduler(backend, BatchPolicy(4096, 64, 0.0))
    scoring = ScoringService(
        model_id="m",
        backend=backend,
        tokenizer=tokenizer,
        calibration=CalibrationEngine(StreamConfig()),
        admission=Admission(capacity),
        scheduler=scheduler,
        max_items=16,
        truncation="left",
    )
    return scoring, scheduler


@pytest.mark.parametrize("batches_itself", [False, True])
async def test_overload_is_503_and_accepted_work_completes_for_every_backend_kind(
    bert_tokenizer: Any, batches_itself: bool
) -> None:
    backend = FakeBackend(bert_tokenizer, batches_itself=batches_itself)
    backend.gate = threading.Event()
    await backend.start()
    scoring, scheduler = _scoring(bert_tokenizer, backend, capacity=3)
    await scheduler.start()
    try:
        accepted = asyncio.ensure_future(
            scoring.score([ScoreInput(text="a b c"), ScoreInput(text="d e")], group="g")
        )
        while not backend.batches:
            await asyncio.sleep(0.01)
        if batches_itself:  # the request's inputs reach the engine as sent, unbatched
            assert len(backend.batches) == 1 and len(backend.batches[0]) == 2
        with pytest.raises(Overloaded):
            await scoring.score([ScoreInput(text="x"), ScoreInput(text="y")], group="g")
        backend.gate.set()
        result = await asyncio.wait_for(accepted, 10)
        assert len(result.items) == 2
        # Capacity is back once the accepted work is answered.
        again = await scoring.score([ScoreInput(text="x"), ScoreInput(text="y")], group="g")
        assert len(again.items) == 2
    finally:
        backend.gate.set()
        await scheduler.stop()
        scoring.close()


async def test_a_cancelled_request_gives_its_permit_back_at_once(bert_tokenizer: Any) -> None:
    backend = FakeBackend(bert_tokenizer, batches_itself=True)
    backend.gate = threading.Event()
    await backend.start()
    scoring, _ = _scoring(bert_tokenizer, backend, capacity=2)
    try:
        doomed = asyncio.ensure_future(
            scoring.score([ScoreInput(text="a"), ScoreInput(text="b")], group="g")
        )
        while not backend.batches:
            await asyncio.sleep(0.01)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        backend.gate.set()
        result = await scoring.score([ScoreInput(text="c"), ScoreInput(text="d")], group="g")
        assert len(result.items) == 2
    finally:
        backend.gate.set()
        scoring.close()
