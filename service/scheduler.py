"""Batch stage: dynamic batching across requests, for backends that pad.

One asyncio task owns the queue (TEI's queue, Ray Serve's ``_BatchQueue``). Requests put
their admitted, tokenized inputs in; the task waits until the queue holds a batch's worth
of inputs or its oldest input has waited ``max_wait``, then takes the oldest input and the
queued inputs closest to it in length, within a token budget (padded tokens) and a size cap
(:mod:`rewardcal.batch_selection`: little padding, and no input starves), and awaits the
backend, which runs inference off the event loop. Results keep request order.

Admission is not decided here (:mod:`rewardcal.pipeline.admission` runs before
tokenization). Backends that batch themselves (vLLM, a remote vLLM) never come here.
A request whose client went away cancels its futures; cancelled inputs are skipped before
inference.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from rewardcal.backends.base import RewardBackend
from rewardcal.batch_selection import choose_batch
from rewardcal.errors import ErrorType, ServiceError
from rewardcal.log_context import request_id_var
from rewardcal.metrics import ServingMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_tokens: int
    """Budget of one batch in padded tokens: batch size x longest input."""
    max_batch_size: int
    max_wait_s: float


@dataclass
class _Entry:
    token_ids: Sequence[int]
    future: asyncio.Future[float]
    enqueued_at: float = field(default_factory=time.monotonic)
    request_id: str = field(default_factory=request_id_var.get)


SELECTION_WINDOW = 4096
"""Most queued inputs a batch is chosen from (bounds the sort when the queue is long)."""


def padded_cost(batch_size: int, longest: int) -> int:
    """Tokens a padded batch computes over: what the token budget limits."""
    return batch_size * longest


class Scheduler:
    def __init__(
        self,
        backend: RewardBackend,
        policy: BatchPolicy,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self._backend = backend
        self._policy = policy
        self._metrics = metrics
        self._queue: collections.deque[_Entry] = collections.deque()
        self._pending = 0  # inputs submitted and not yet answered (queued or in a batch)
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_batch: list[_Entry] = []  # taken off the queue, not yet answered

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def queued(self) -> int:
        return sum(1 for e in self._queue if not e.future.done())

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="rewardcal-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for entry in [*self._in_batch, *self._queue]:
            if not entry.future.done():
                entry.future.set_exception(
                    ServiceError(ErrorType.NOT_READY, "the service is shutting down")
                )
        self._queue.clear()
        self._in_batch = []

    async def submit(self, inputs: Sequence[Sequence[int]]) -> list[float]:
        """Raw rewards of admitted inputs, in order, once the batches holding them ran."""
        if not inputs:
            return []
        if self._task is None:
            raise ServiceError(ErrorType.NOT_READY, "the model is not loaded yet")
        loop = asyncio.get_running_loop()
        entries = [_Entry(ids, loop.create_future()) for ids in inputs]
        for entry in entries:
            entry.future.add_done_callback(self._on_done)
        self._pending += len(entries)
        self._queue.extend(entries)
        self._observe_depth()
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*(e.future for e in entries)))
        except BaseException:
            # Client gone, timeout, or a failed batch: nothing of ours should still run.
            for entry in entries:
                entry.future.cancel()
            raise

    def _on_done(self, _future: asyncio.Future[float]) -> None:
        self._pending -= 1

    def _observe_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth(self.queued)

    # ---- the batching task ------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wait_for_input()
            batch = await self._collect_batch()
            if batch:
                await self._execute(batch)

    async def _wait_for_input(self) -> None:
        while not self._drop_cancelled_head():
            self._wakeup.clear()
            await self._wakeup.wait()

    def _drop_cancelled_head(self) -> bool:
        """Pop inputs whose request went away; True when a live input is at the head."""
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()
        return bool(self._queue)

    async def _collect_batch(self) -> list[_Entry]:
        policy = self._policy
        deadline = self._queue[0].enqueued_at + policy.max_wait_s
        while not self._enough_queued():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
        if not self._drop_cancelled_head():
            return []
        # The oldest input and those closest to it in length (see rewardcal.batch_selection).
        candidates = [
            e for e in itertools.islice(self._queue, SELECTION_WINDOW) if not e.future.done()
        ]
        chosen = choose_batch(
            [len(e.token_ids) for e in candidates], policy.max_batch_tokens, policy.max_batch_size
        )
        batch = [candidates[i] for i in chosen]
        taken = {id(e) for e in batch}
        self._queue = collections.deque(
            e for e in self._queue if id(e) not in taken and not e.future.done()
        )
        self._in_batch = batch
        self._observe_depth()
        return batch

    def _enough_queued(self) -> bool:
        """Whether the queue holds a full batch: the size cap, or live inputs whose padded
        cost (count x longest, the budget's unit) reaches the token budget."""
        count = longest = 0
        for entry in self._queue:
            if entry.future.done():
                continue
            count += 1
            longest = max(longest, len(entry.token_ids))
            if count >= self._policy.max_batch_size:
                return True
            if padded_cost(count, longest) >= self._policy.max_batch_tokens:
                return True
        return False

    async def _execute(self, batch: list[_Entry]) -> None:
        live = sorted((e for e in batch if not e.future.done()), key=lambda e: len(e.token_ids))
        if not live:
            return
        started = time.monotonic()
        if self._metrics is not None:
            for entry in live:
                self._metrics.queue_time(started - entry.enqueued_at)
            longest = max(len(e.token_ids) for e in live)
            self._metrics.batch(len(live), padded_cost(len(live), longest))
        try:
            await self._score_isolating_failures(live)
        finally:
            if self._metrics is not None:
                self._metrics.inference_time(time.monotonic() - started)

    async def _score_isolating_failures(self, entries: list[_Entry]) -> None:
        """Score a batch; if it fails, split it and retry the halves, so that only the
        inputs at fault fail and the other requests that shared the batch get scores.

        Inputs are validated before batching, so a failure here is rare (an input the
        backend refuses for a reason validation cannot know); it costs about
        2 x log2(batch) extra forward passes for one bad input."""
        try:
            rewards = await self._backend.score([e.token_ids for e in entries])
            if len(rewards) != len(entries):
                raise RuntimeError(f"backend returned {len(rewards)} scores for {len(entries)}")
        except Exception as exc:  # noqa: BLE001 - fail the inputs at fault only, keep serving
            live = [e for e in entries if not e.future.done()]
            if len(live) > 1:
                middle = len(live) // 2
                await self._score_isolating_failures(live[:middle])
                await self._score_isolating_failures(live[middle:])
                return
            # The batch runs outside any request's context: name the requests it served.
            request_ids = sorted({entry.request_id for entry in entries})
            logger.error(
                "inference failed for an input of %d tokens (request %s): %s: %s",
                len(entries[0].token_ids),
                ", ".join(request_ids),
                type(exc).__name__,
                str(exc)[:200],
            )
            error = ServiceError(ErrorType.BACKEND, f"inference failed: {type(exc).__name__}")
            for entry in live:
                entry.future.set_exception(error)
            return
        for entry, reward in zip(entries, rewards, strict=True):
            if not entry.future.done():
                entry.future.set_result(reward)
