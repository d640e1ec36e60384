"""The scoring path shared by every protocol.

inputs -> tokenize + features (tokenizer thread) -> scheduler (batching, admission)
-> backend -> raw rewards -> calibration with the curve current at arrival -> results;
then the observations go to the calibration stream (unless the request opted out).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rewardcal import formatting
from rewardcal.backends.base import RewardBackend
from rewardcal.calibration import CalibrationEngine, CurveView
from rewardcal.config import TruncationPolicy
from rewardcal.errors import ErrorType, ServiceError
from rewardcal.features import response_features
from rewardcal.formatting import char_bound
from rewardcal.metrics import ServingMetrics
from rewardcal.scheduler import Scheduler
from rewardcal.templated import ResponseLocator

TOKENIZE_CHUNK_CHARS = 1 << 17
"""Characters of text one tokenizer job takes at most (beyond one input's own bound): about
tens of ms of a fast tokenizer, the longest a small request waits behind a huge one."""


@dataclass(frozen=True)
class ScoreInput:
    """One thing to score, in whichever form the protocol delivered it.

    Exactly one of ``messages``, ``text`` and ``token_ids`` is set. ``response`` is the part
    whose bias features are measured (None: derived from messages or the decoded ids).
    """

    messages: tuple[Mapping[str, str], ...] | None = None
    text: str | None = None
    token_ids: tuple[int, ...] | None = None
    response: str | None = None


@dataclass(frozen=True)
class ScoredItem:
    index: int
    reward: float
    raw_reward: float
    bias: float
    features: dict[str, float]
    input_tokens: int
    # Templated text without a given response: whether the chat template located the
    # response (False: the whole text was measured). None for other inputs.
    response_located: bool | None = None


@dataclass(frozen=True)
class ScoreResult:
    model: str
    curve: CurveView
    items: list[ScoredItem]

    @property
    def prompt_tokens(self) -> int:
        return sum(item.input_tokens for item in self.items)


@dataclass(frozen=True)
class _Prepared:
    token_ids: list[list[int]]
    features: list[dict[str, float]]
    located: list[bool | None]


class ScoringService:
    def __init__(
        self,
        *,
        model_id: str,
        backend: RewardBackend,
        scheduler: Scheduler,
        calibration: CalibrationEngine,
        max_items: int,
        truncation: TruncationPolicy,
        max_input_tokens: int | None = None,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.model_id = model_id
        self._backend = backend
        self._scheduler = scheduler
        self._calibration = calibration
        self._max_items = max_items
        self._truncation = truncation
        self._configured_max_tokens = max_input_tokens
        self._metrics = metrics
        # Fast tokenizers are not safe to reconfigure (truncation) from several threads;
        # one thread keeps tokenization serialized and off the event loop.
        self._tokenizer_thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="rewardcal-tokenize"
        )
        self._locator: ResponseLocator | None = None  # built from the tokenizer on first use

    @property
    def max_input_tokens(self) -> int:
        """The configured limit, capped by the model's context."""
        model_limit = self._backend.limits.max_input_tokens
        if self._configured_max_tokens is None:
            return model_limit
        return min(self._configured_max_tokens, model_limit)

    def close(self) -> None:
        self._tokenizer_thread.shutdown(wait=False, cancel_futures=True)

    def check_count(self, count: int, what: str = "items") -> None:
        if count == 0:
            raise ServiceError(ErrorType.VALIDATION, f"no {what} to score")
        if count > self._max_items:
            raise ServiceError(
                ErrorType.PAYLOAD_TOO_LARGE,
                f"{count} {what} in one request; the limit is {self._max_items}",
            )

    async def score(
        self,
        inputs: Sequence[ScoreInput],
        *,
        group: str,
        observe: bool = True,
        max_tokens: int | None = None,
    ) -> ScoreResult:
        self.check_count(len(inputs))
        # Only observed traffic creates a stream; evaluation traffic (observe: false) on an
        # unknown group is scored without calibration and says so in its status.
        if observe:
            await self._calibration.ensure(self.model_id, group)
        curve = self._calibration.current(self.model_id, group, create=observe)
        limit = (
            self.max_input_tokens if max_tokens is None else min(max_tokens, self.max_input_tokens)
        )
        # Admission first: an overloaded server answers 503 before spending any work.
        with self._scheduler.reserve(len(inputs)) as reservation:
            prepared = await self._tokenize(list(inputs), limit)
            raw = await self._scheduler.submit(prepared.token_ids, reservation)
        rewards, biases = curve.apply(prepared.features, raw)
        self._calibration.record(
            self.model_id, group, prepared.features, raw, rewards, observe=observe
        )
        if self._metrics is not None:
            self._metrics.items(self.model_id, len(raw))
            located = sum(1 for x in prepared.located if x is True)
            fallback = sum(1 for x in prepared.located if x is False)
            self._metrics.templated_responses(self.model_id, located, fallback)
        items = [
            ScoredItem(
                index=i,
                reward=rewards[i],
                raw_reward=raw[i],
                bias=biases[i],
                features=prepared.features[i],
                input_tokens=len(prepared.token_ids[i]),
                response_located=prepared.located[i],
            )
            for i in range(len(raw))
        ]
        return ScoreResult(model=self.model_id, curve=curve, items=items)

    async def _tokenize(self, inputs: list[ScoreInput], limit: int) -> _Prepared:
        """Tokenize in chunks of bounded size on the shared tokenizer thread.

        Each chunk is one job in the thread's FIFO queue, so a huge request takes turns with
        small ones instead of holding the tokenizer for seconds, and a request whose client
        left is cancelled between chunks."""
        loop = asyncio.get_running_loop()
        token_ids: list[list[int]] = []
        features: list[dict[str, float]] = []
        located: list[bool | None] = []
        for start, chunk in _chunks(inputs, char_bound(limit)):
            part = await loop.run_in_executor(
                self._tokenizer_thread, self._prepare, chunk, limit, start
            )
            token_ids.extend(part.token_ids)
            features.extend(part.features)
            located.extend(part.located)
        return _Prepared(token_ids=token_ids, features=features, located=located)

    # ---- runs in the tokenizer thread ---------------------------------------------------

    def _locator_for(self, tokenizer: Any) -> ResponseLocator:
        if self._locator is None:
            self._locator = ResponseLocator(tokenizer)
        return self._locator

    def _locate(self, tokenizer: Any, text: str) -> tuple[str, bool]:
        found = self._locator_for(tokenizer).locate(text)
        return found.response, found.located

    def _prepare(self, inputs: list[ScoreInput], limit: int, first_index: int) -> _Prepared:
        tokenizer = self._backend.tokenizer
        side: formatting.TruncationSide = "right" if self._truncation == "right" else "left"
        vocab_size = len(tokenizer)
        token_ids: list[list[int]] = []
        features: list[dict[str, float]] = []
        located: list[bool | None] = []
        for offset, item in enumerate(inputs):
            index = first_index + offset
            found: bool | None = None
            if item.token_ids is not None:
                ids = self._take_ids(item.token_ids, limit, side, vocab_size, index)
                length = len(item.token_ids)
                response = item.response
                if response is None:
                    # The scored ids are what the model judges (never more than the limit
                    # is decoded). Special tokens kept: chat templates mark turns with them.
                    decoded = tokenizer.decode(ids, skip_special_tokens=False)
                    response, found = self._locate(tokenizer, decoded)
                    if not found:
                        response = tokenizer.decode(ids, skip_special_tokens=True)
            else:
                if item.messages is not None:
                    text = _render(tokenizer, item.messages, index)
                    response = item.response
                    if response is None:
                        response = formatting.last_assistant_turn(item.messages)
                else:
                    assert item.text is not None
                    text = item.text
                    response = item.response
                    if response is None:  # templated text: the template says where it is
                        response, found = self._locate(tokenizer, text)
                    else:  # cut from templated text: drop the end-of-turn that follows it
                        response = self._locator_for(tokenizer).strip_end(response)
                encoded = _encode(tokenizer, text, limit, side, index)
                ids, length = encoded.ids, encoded.length
            if length > limit and self._truncation == "error":
                raise ServiceError(
                    ErrorType.VALIDATION,
                    f"input {index} has {length} tokens or more; the limit is {limit} (the "
                    "server is configured to refuse rather than truncate)",
                )
            if not ids:
                raise ServiceError(ErrorType.VALIDATION, f"input {index} is empty")
            token_ids.append(ids)
            count = formatting.count_tokens(tokenizer, response, char_bound(limit))
            features.append(response_features(response, count))
            located.append(found)
        return _Prepared(token_ids=token_ids, features=features, located=located)

    def _take_ids(
        self,
        ids: Sequence[int],
        limit: int,
        side: formatting.TruncationSide,
        vocab_size: int,
        index: int,
    ) -> list[int]:
        # Checked here, before any batch: an id outside the vocabulary would fail the
        # forward pass of every request batched with it.
        if ids and (min(ids) < 0 or max(ids) >= vocab_size):
            bad = next(t for t in ids if not 0 <= t < vocab_size)
            raise ServiceError(
                ErrorType.INVALID_REQUEST,
                f"input {index}: token id {bad} is outside the model's vocabulary "
                f"(0 to {vocab_size - 1})",
            )
        specials = formatting.special_tokens(self._backend.tokenizer)
        return _truncate(ids, limit, side, specials, index)


def _chunks(inputs: list[ScoreInput], item_chars: int) -> Iterator[tuple[int, list[ScoreInput]]]:
    """(first index, inputs) runs of about TOKENIZE_CHUNK_CHARS characters of work each."""
    start = 0
    budget = 0
    for index, item in enumerate(inputs):
        budget += min(_work(item), item_chars)
        if budget >= TOKENIZE_CHUNK_CHARS:
            yield start, inputs[start : index + 1]
            start, budget = index + 1, 0
    if start < len(inputs):
        yield start, inputs[start:]


def _work(item: ScoreInput) -> int:
    if item.token_ids is not None:
        return 4 * min(len(item.token_ids), 4096)  # decoding the kept ids
    if item.text is not None:
        return len(item.text)
    assert item.messages is not None
    return sum(len(str(m.get("content", ""))) for m in item.messages)


def _encode(
    tokenizer: Any, text: str, limit: int, side: formatting.TruncationSide, index: int
) -> formatting.Encoded:
    try:
        return formatting.encode_one(tokenizer, text, limit, side)
    except ValueError as exc:  # a limit below the special tokens (truncate_prompt_tokens: 1)
        raise ServiceError(ErrorType.INVALID_REQUEST, f"input {index}: {exc}") from None


def _truncate(
    ids: Sequence[int],
    limit: int,
    side: formatting.TruncationSide,
    specials: formatting.SpecialTokens,
    index: int,
) -> list[int]:
    try:
        return formatting.truncate_ids(ids, limit, side, specials)
    except ValueError as exc:
        raise ServiceError(ErrorType.INVALID_REQUEST, f"input {index}: {exc}") from None


def _render(tokenizer: Any, messages: Sequence[Mapping[str, str]], index: int) -> str:
    try:
        return formatting.render_messages(tokenizer, messages)
    except Exception as exc:  # noqa: BLE001 - templates raise anything (jinja, TypeError)
        # Chat templates refuse some conversations (e.g. roles that do not alternate):
        # that is the client's input, not a server fault.
        raise ServiceError(
            ErrorType.VALIDATION,
            f"input {index}: the model's chat template refused these messages: {str(exc)[:200]}",
        ) from None
