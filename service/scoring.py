"""The scoring path shared by every protocol, read top to bottom (see rewardcal.pipeline):

admit (one permit, 503 at once when full) -> tokenize (worker pool, batched encodes) ->
batch (only backends that pad) -> score (backend) -> calibrate with the curve current at
arrival -> record the observations (unless the request opted out) -> results.
Requests arrive here validated by their wire schemas.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rewardcal.backends.base import RewardBackend
from rewardcal.calibration import CalibrationEngine, CurveView
from rewardcal.config import TruncationPolicy
from rewardcal.errors import ErrorType, ServiceError
from rewardcal.features import FEATURE_NAMES
from rewardcal.metrics import ServingMetrics
from rewardcal.pipeline.admission import Admission
from rewardcal.pipeline.tokenize import ScoreInput, TokenizeStage
from rewardcal.scheduler import Scheduler

__all__ = ["ScoreInput", "ScoreResult", "ScoredItem", "ScoringService"]

ALL_FEATURES = frozenset(FEATURE_NAMES)


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


class ScoringService:
    def __init__(
        self,
        *,
        model_id: str,
        backend: RewardBackend,
        tokenizer: Any,
        calibration: CalibrationEngine,
        admission: Admission,
        scheduler: Scheduler | None,
        max_items: int,
        truncation: TruncationPolicy,
        max_input_tokens: int | None = None,
        features: Sequence[str] = FEATURE_NAMES,
        tokenizer_workers: int = 1,
        metrics: ServingMetrics | None = None,
    ) -> None:
        """``scheduler`` batches for backends that pad; None (or a backend that batches
        itself) sends admitted inputs to the backend directly. ``features``: the ones
        calibration uses (computed for every request; routes may ask for more)."""
        self.model_id = model_id
        self._backend = backend
        self._calibration = calibration
        self._admission = admission
        self._max_items = max_items
        self._configured_max_tokens = max_input_tokens
        # chars always: the calibration metrics histogram response lengths.
        self._features = frozenset(features) | {"chars"}
        self._metrics = metrics
        self._tokenize = TokenizeStage(tokenizer, truncation=truncation, workers=tokenizer_workers)
        self._infer: Callable[[Sequence[Sequence[int]]], Awaitable[list[float]]]
        if scheduler is None or backend.limits.batches_itself:
            self._infer = backend.score
        else:
            self._infer = scheduler.submit

    @property
    def max_input_tokens(self) -> int:
        """The configured limit, capped by the model's context."""
        model_limit = self._backend.limits.max_input_tokens
        if self._configured_max_tokens is None:
            return model_limit
        return min(self._configured_max_tokens, model_limit)

    def close(self) -> None:
        self._tokenize.close()

    async def score(
        self,
        inputs: Sequence[ScoreInput],
        *,
        group: str,
        observe: bool = True,
        max_tokens: int | None = None,
        report: frozenset[str] = frozenset(),
        what: str = "items",
    ) -> ScoreResult:
        """``report``: features the caller returns besides those calibration uses."""
        self._check_count(len(inputs), what)
        # Only observed traffic creates a stream; evaluation traffic (observe: false) on an
        # unknown group is scored without calibration and says so in its status.
        if observe:
            await self._calibration.ensure(self.model_id, group)
        curve = self._calibration.current(self.model_id, group, create=observe)
        limit = self.max_input_tokens
        if max_tokens is not None:
            limit = min(max_tokens, limit)
        # Admission first: an overloaded server answers 503 before spending any work.
        with self._admission.permit(len(inputs)):
            prepared = await self._tokenize.prepare(
                inputs, limit, self._features | report | curve.features
            )
            raw = await self._infer(prepared.token_ids)
        rewards, biases = curve.apply(prepared.features, raw)
        self._calibration.record(
            self.model_id, group, prepared.features, raw, rewards, observe=observe
        )
        if self._metrics is not None:
            self._metrics.items(self.model_id, len(raw))
            located = sum(1 for x in prepared.located if x is True)
            fallback = sum(1 for x in prepared.located if x is False)
            if located or fallback:
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

    def _check_count(self, count: int, what: str) -> None:
        if count == 0:
            raise ServiceError(ErrorType.VALIDATION, f"no {what} to score")
        if count > self._max_items:
            raise ServiceError(
                ErrorType.PAYLOAD_TOO_LARGE,
                f"{count} {what} in one request; the limit is {self._max_items}",
            )
