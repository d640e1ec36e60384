"""The backend interface: everything the service needs from a reward model runtime.

Kept small on purpose (the shape of TEI's backend trait): a backend scores batches of
token ids and says whether it is healthy. Tokenization happens before the backend (see
``rewardcal.formatting``), so every backend scores the same tokens and the scheduler's
token budget counts real tokens.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BackendLimits:
    """What the scheduler and the request validation need to know of a backend."""

    max_input_tokens: int
    """Longest input the model accepts (its context length)."""
    batches_itself: bool
    """True for engines that batch continuously (vLLM): the scheduler then forwards
    requests at once instead of batching a second time; admission control still applies."""


class RewardBackend(abc.ABC):
    """A reward model runtime: token ids in, one raw reward (first logit) per input out."""

    name: str = "base"

    @property
    @abc.abstractmethod
    def tokenizer(self) -> Any:
        """The reward model's tokenizer (chat template included)."""

    @property
    @abc.abstractmethod
    def limits(self) -> BackendLimits: ...

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model; raise BackendStartError with one clear line on failure."""

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def score(self, batch: Sequence[Sequence[int]]) -> list[float]:
        """Raw rewards, one per input, in input order. Never blocks the event loop."""

    @abc.abstractmethod
    async def health(self) -> bool: ...


class LocalTokenizerBackend(RewardBackend):
    """A backend that loads the model's tokenizer itself at start (every real backend).

    Holds the tokenizer and the limits, which ``start`` may refine from the model's config.
    """

    def __init__(self, max_input_tokens: int, *, batches_itself: bool) -> None:
        self._tokenizer: Any = None
        self._limits = BackendLimits(max_input_tokens, batches_itself)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise RuntimeError("backend not started")
        return self._tokenizer

    @property
    def limits(self) -> BackendLimits:
        return self._limits


class BackendStartError(RuntimeError):
    """The model could not be loaded; the message is one line for the operator."""
