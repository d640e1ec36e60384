"""The backend interface: everything the scoring path needs from a reward model runtime.

Kept small on purpose (the shape of TEI's backend trait): a backend scores token ids
(``score``), says what it accepts (``limits``) and whether it is healthy (``health``); the
runtime starts and stops it. Tokenization happens before the backend
(:mod:`rewardcal.pipeline.tokenize`, with the model artifacts loaded once by
:mod:`rewardcal.pipeline.artifacts`), so every backend scores the same tokens and the
batcher's token budget counts real tokens.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rewardcal.pipeline.artifacts import ModelArtifacts


@dataclass(frozen=True)
class BackendLimits:
    """What the batcher and the request validation need to know of a backend."""

    max_input_tokens: int
    """Longest input the model accepts (its context length)."""
    batches_itself: bool
    """True for engines that batch continuously (vLLM, a remote vLLM): admitted inputs go
    to them at once instead of being batched a second time (admission still applies)."""


class RewardBackend(abc.ABC):
    """A reward model runtime: token ids in, one raw reward (first logit) per input out."""

    name: str = "base"

    @property
    @abc.abstractmethod
    def limits(self) -> BackendLimits: ...

    @abc.abstractmethod
    async def start(self, artifacts: ModelArtifacts | None = None) -> None:
        """Load the model (``artifacts``: tokenizer and config already loaded by the runtime;
        None: load them here). Raise BackendStartError with one clear line on failure."""

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def score(self, batch: Sequence[Sequence[int]]) -> list[float]:
        """Raw rewards, one per input, in input order. Never blocks the event loop."""

    @abc.abstractmethod
    async def health(self) -> bool: ...


class BackendStartError(RuntimeError):
    """The model could not be loaded; the message is one line for the operator."""
