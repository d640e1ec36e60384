"""Dynamic batching (the batch stage): budgets, waits, cancellation, failure isolation."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rewardcal.errors import ErrorType, ServiceError
from rewardcal.scheduler import BatchPolicy, Scheduler, padded_cost
from tests.fakes import FakeBackend


def _policy(**overrides: float) -> BatchPolicy:
    values: dict = dict(max_batch_tokens=64, max_batch_size=8, max_wait_s=0.05)
    values.update(overrides)
    return BatchPolicy(**values)


async def _started(
    policy: BatchPolicy, backend: FakeBackend | None = None
) -> tuple[Scheduler, FakeBackend]:
    backend = backend or FakeBackend(tokenizer=None)
    await backend.start()
    scheduler = Scheduler(backend, policy)
    await scheduler.start()
    return scheduler, backend


def _ids(n: int, start: int = 1) -> list[int]:
    return list(range(start, start + n))


async def test_batches_respect_token_budget_and_size_cap() -> None:
    scheduler, backend = await _started(_policy(max_batch_tokens=64, max_batch_size=8))
    lengths = [5, 30, 12, 7, 16, 16, 3, 40, 9, 11, 2, 25, 8, 8, 8, 8, 8, 8, 8, 8]
    results = await asyncio.gather(
        *(scheduler.submit([_ids(n, start=100 * i)]) for i, n in enumerate(lengths))
    )
    await scheduler.stop()
    assert [r[0] for r in results] == pytest.approx([0.01 * n for n in lengths])
    assert sorted(len(ids) for ids in backend.scored_ids) == sorted(lengths)
    assert len(backend.batches) > 1
    for batch in backend.batches:
        assert len(batch) <= 8
        longest = max(len(ids) for ids in batch)
        assert padded_cost(len(batch), longest) <= 64 or len(batch) == 1


async def test_batch_is_sorted_by_length_and_results_keep_request_order() -> None:
    scheduler, backend = await _started(_policy(max_batch_tokens=10_000, max_wait_s=0.05))
    result = await scheduler.submit([_ids(9), _ids(2), _ids(5)])
    await scheduler.stop()
    assert result == pytest.approx([0.09, 0.02, 0.05])
    assert [len(ids) for ids in backend.batches[0]] == [2, 5, 9]


async def test_queued_inputs_are_batched_by_length_around_the_oldest() -> None:
    # A burst arrives while a batch is in flight (a v0.9 trainer's 64 one-sample requests):
    # the next batches group similar lengths instead of padding short inputs to long ones.
    backend = FakeBackend(tokenizer=None)
    backend.gate = threading.Event()
    scheduler, _ = await _started(_policy(max_batch_tokens=400, max_wait_s=0.01), backend)
    in_flight = asyncio.ensure_future(scheduler.submit([_ids(5)]))
    await asyncio.sleep(0.05)
    lengths = [100, 10, 95, 12, 90, 11, 300]
    burst = [asyncio.ensure_future(scheduler.submit([_ids(n)])) for n in lengths]
    await asyncio.sleep(0.05)
    backend.gate.set()
    results = await asyncio.wait_for(asyncio.gather(in_flight, *burst), 5)
    await scheduler.stop()
    assert [r[0] for r in results] == pytest.approx([0.05] + [0.01 * n for n in lengths])
    assert [sorted(len(ids) for ids in b) for b in backend.batches] == [
        [5],
        [90, 95, 100],  # the oldest queued input (100) and its nearest lengths
        [10, 11, 12],
        [300],
    ]


async def test_an_input_larger_than_the_budget_runs_alone() -> None:
    scheduler, backend = await _started(_policy(max_batch_tokens=16))
    result = await scheduler.submit([_ids(40), _ids(3)])
    await scheduler.stop()
    assert result == pytest.approx([0.40, 0.03])
    assert sorted(len(b) for b in backend.batches) == [1, 1]


async def test_lone_request_is_flushed_after_max_wait() -> None:
    scheduler, backend = await _started(_policy(max_wait_s=0.2, max_batch_size=8))
    started = time.monotonic()
    result = await scheduler.submit([_ids(4)])
    waited = time.monotonic() - started
    await scheduler.stop()
    assert result == pytest.approx([0.04])
    # It waited for company (a full max_wait), and was then sent alone.
    assert waited >= 0.19
    assert len(backend.batches) == 1


async def test_full_batch_is_sent_without_waiting() -> None:
    scheduler, backend = await _started(_policy(max_wait_s=5.0, max_batch_size=4))
    result = await asyncio.wait_for(scheduler.submit([_ids(3)] * 4), timeout=2.0)
    await scheduler.stop()
    assert len(result) == 4
    assert len(backend.batches) == 1


async def test_cancelled_request_is_not_scored() -> None:
    scheduler, backend = await _started(_policy(max_wait_s=0.3, max_batch_size=8))
    marker = _ids(7, start=5000)
    doomed = asyncio.ensure_future(scheduler.submit([marker]))
    await asyncio.sleep(0.02)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert scheduler.pending == 0  # it no longer counts against the queue
    survivor = await scheduler.submit([_ids(3)])
    await scheduler.stop()
    assert survivor == pytest.approx([0.03])
    assert marker not in backend.scored_ids


async def test_failing_batch_fails_only_its_requests() -> None:
    backend = FakeBackend(tokenizer=None)
    backend.fail_when = lambda batch: any(ids[0] == 999 for ids in batch)
    scheduler, _ = await _started(_policy(max_wait_s=0.0, max_batch_size=1), backend)
    with pytest.raises(ServiceError) as failed:
        await scheduler.submit([[999, 1, 2]])
    assert failed.value.error_type is ErrorType.BACKEND
    assert "simulated" not in failed.value.message  # internals stay in the log
    assert await scheduler.submit([_ids(5)]) == pytest.approx([0.05])
    await scheduler.stop()


async def test_stop_fails_waiting_requests_instead_of_hanging() -> None:
    scheduler, _ = await _started(_policy(max_wait_s=10.0, max_batch_size=8))
    waiting = asyncio.ensure_future(scheduler.submit([_ids(3)]))
    await asyncio.sleep(0.02)
    await scheduler.stop()
    with pytest.raises(ServiceError):
        await asyncio.wait_for(waiting, 2)
