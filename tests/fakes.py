"""Test doubles for the backend interface: deterministic, observable, controllable."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rewardcal.backends.base import BackendLimits, RewardBackend
from rewardcal.pipeline.artifacts import ModelArtifacts, context_length


class FakeBackend(RewardBackend):
    """Scores an input as 0.01 x its token count (a perfectly length-biased 'model').

    Records every batch it scores. ``gate`` (a threading.Event) makes score() wait until
    set, to hold batches in flight; ``fail_when`` makes the batches it matches raise.
    """

    name = "fake"

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_input_tokens: int = 512,
        batches_itself: bool = False,
        delay_s: float = 0.0,
    ) -> None:
        self._tokenizer = tokenizer
        self._limits = BackendLimits(
            max_input_tokens=max_input_tokens, batches_itself=batches_itself
        )
        self.delay_s = delay_s
        self.batches: list[list[list[int]]] = []
        self.gate: threading.Event | None = None
        self.fail_when: Any = None
        self.started = False
        self.start_error: Exception | None = None
        self.start_delay_s = 0.0

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def artifacts(self) -> ModelArtifacts:
        """What the runtime tokenizes with when this double is served (its tokenizer)."""
        return ModelArtifacts(
            path=Path("fake"),
            tokenizer=self._tokenizer,
            config=None,
            context_length=context_length(None, self._tokenizer),
            vocab_size=len(self._tokenizer),
        )

    @property
    def limits(self) -> BackendLimits:
        return self._limits

    async def start(self, artifacts: ModelArtifacts | None = None) -> None:
        if self.start_delay_s:
            await asyncio.sleep(self.start_delay_s)
        if self.start_error is not None:
            raise self.start_error
        self.started = True

    async def stop(self) -> None:
        self.started = False
        if self.gate is not None:
            self.gate.set()

    async def health(self) -> bool:
        return self.started

    async def score(self, batch: Sequence[Sequence[int]]) -> list[float]:
        batch_list = [list(ids) for ids in batch]
        self.batches.append(batch_list)
        if self.gate is not None:
            await asyncio.to_thread(self.gate.wait, 30)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_when is not None and self.fail_when(batch_list):
            raise RuntimeError("simulated backend failure")
        return [0.01 * len(ids) for ids in batch_list]

    @property
    def scored_ids(self) -> list[list[int]]:
        return [ids for batch in self.batches for ids in batch]


class LengthBiasedBackend(FakeBackend):
    """A reward 'model' that pays for length: 0.6 * log(tokens) + a content term.

    The content term is a deterministic pseudo-random value of the token ids, so rewards
    vary between responses of equal length, as a real reward model's do.
    """

    name = "length-biased"

    async def score(self, batch: Sequence[Sequence[int]]) -> list[float]:
        import math

        self.batches.append([list(ids) for ids in batch])
        out = []
        for ids in batch:
            content = ((sum(ids) * 2654435761 + len(ids) * 40503) % 10007) / 10007 - 0.5
            out.append(0.6 * math.log(len(ids)) + content)
        return out
