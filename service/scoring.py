"""The scoring path shared by every protocol.

inputs -> tokenize + features (tokenizer thread) -> scheduler (batching, admission)
-> backend -> raw rewards -> calibration with the curve current at arrival -> results;
then the observations go to the calibration stream (unless the request opted out).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service import formatting
from service.backends.base import RewardBackend
from service.calibration import CalibrationEngine, CurveView
from service.config import TruncationPolicy
from service.errors import ErrorType, ServiceError
from service.features import response_features
from service.metrics import ServingMetrics
from service.scheduler import Scheduler
from service.templated import ResponseLocator


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
        curve = self._calibration.current(self.model_id, group)
        limit = (
            self.max_input_tokens if max_tokens is None else min(max_tokens, self.max_input_tokens)
        )
        loop = asyncio.get_running_loop()
        # Admission first: an overloaded server answers 503 before spending any work.
        with self._scheduler.reserve(len(inputs)) as reservation:
            prepared = await loop.run_in_executor(
                self._tokenizer_thread, self._prepare, list(inputs), limit
            )
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

    # ---- runs in the tokenizer thread ---------------------------------------------------

    def _locator_for(self, tokenizer: Any) -> ResponseLocator:
        if self._locator is None:
            self._locator = ResponseLocator(tokenizer)
        return self._locator

    def _locate(self, tokenizer: Any, text: str) -> tuple[str, bool]:
        found = self._locator_for(tokenizer).locate(text)
        return found.response, found.located

    def _prepare(self, inputs: list[ScoreInput], limit: int) -> _Prepared:
        tokenizer = self._backend.tokenizer
        side: formatting.TruncationSide = "right" if self._truncation == "right" else "left"
        texts: list[str | None] = []
        responses: list[str] = []
        located: list[bool | None] = []
        for index, item in enumerate(inputs):
            found: bool | None = None
            if item.messages is not None:
                texts.append(_render(tokenizer, item.messages, index))
                response = item.response
                if response is None:
                    response = formatting.last_assistant_turn(item.messages)
            elif item.text is not None:
                texts.append(item.text)
                response = item.response
                if response is None:  # templated text: the template says where it is
                    response, found = self._locate(tokenizer, item.text)
                else:  # cut from templated text: drop the end-of-turn that follows it
                    response = self._locator_for(tokenizer).strip_end(response)
            else:
                assert item.token_ids is not None
                texts.append(None)
                response = item.response
                if response is None:
                    # Keep the special tokens: chat templates mark turns with them.
                    decoded = tokenizer.decode(list(item.token_ids), skip_special_tokens=False)
                    response, found = self._locate(tokenizer, decoded)
                    if not found:
                        response = tokenizer.decode(list(item.token_ids), skip_special_tokens=True)
            responses.append(response)
            located.append(found)

        token_ids: list[list[int]] = []
        full_lengths: list[int] = []
        to_encode = [t for t in texts if t is not None]
        encoded, encoded_lengths = formatting.encode(tokenizer, to_encode, limit, side)
        encoded_iter = iter(zip(encoded, encoded_lengths, strict=True))
        for item, text in zip(inputs, texts, strict=True):
            if text is not None:
                ids, full = next(encoded_iter)
            else:
                assert item.token_ids is not None
                full = len(item.token_ids)
                raw_ids = list(item.token_ids)
                ids = raw_ids[-limit:] if side == "left" else raw_ids[:limit]
            token_ids.append(ids)
            full_lengths.append(full)

        if self._truncation == "error":
            for index, full in enumerate(full_lengths):
                if full > limit:
                    raise ServiceError(
                        ErrorType.VALIDATION,
                        f"input {index} has {full} tokens; the limit is {limit} "
                        "(the server is configured to refuse rather than truncate)",
                    )
        for index, ids in enumerate(token_ids):
            if not ids:
                raise ServiceError(ErrorType.VALIDATION, f"input {index} is empty")

        response_token_counts = _count_tokens(tokenizer, responses)
        features = [
            response_features(response, count)
            for response, count in zip(responses, response_token_counts, strict=True)
        ]
        return _Prepared(token_ids=token_ids, features=features, located=located)


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


def _count_tokens(tokenizer: Any, texts: list[str]) -> list[int]:
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)[
        "input_ids"
    ]
    return [len(ids) for ids in encoded]
