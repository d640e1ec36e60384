"""Typed results and errors of the rewardcal client (no server imports: httpx + stdlib only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeAlias

Message: TypeAlias = Mapping[str, Any]
"""A chat message: ``{"role": ..., "content": ...}``."""

Conversation: TypeAlias = Sequence[Message]
"""A conversation; its last assistant turn is the response that is judged and measured."""

ScoreItem: TypeAlias = tuple[str, str] | Mapping[str, Any] | Conversation
"""What :meth:`RewardClient.score` accepts per item: a ``(prompt, response)`` tuple, a
``{"prompt": ..., "response": ...}`` or ``{"messages": [...]}`` dict, or a conversation
(a list of messages)."""

ComparePairInput: TypeAlias = tuple[str, str, str] | Mapping[str, str]
"""A DPO pair: ``(prompt, chosen, rejected)`` or ``{"prompt", "chosen", "rejected"}``."""


def _no_features() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class RewardResult:
    """One scored item.

    ``reward`` is the calibrated reward (equal to ``raw_reward`` while the group is warming
    up); ``bias = raw_reward - reward`` is what calibration removed; ``version`` is the curve
    version that calibrated it (0 before the first fit); ``status`` is ``warming_up``,
    ``reference``, ``calibrated``, ``frozen`` or ``uncalibrated`` (``None`` for
    :meth:`RewardClient.score_texts`: ``/get_reward`` does not report it).
    """

    index: int
    reward: float
    raw_reward: float
    bias: float
    version: int | None
    status: str | None
    group: str
    features: Mapping[str, float] = field(default_factory=_no_features, hash=False)
    model: str | None = None
    method: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CompareResult:
    """One DPO pair: both sides calibrated with the same curve.

    ``margin = chosen.reward - rejected.reward``; ``p_chosen = sigmoid(margin)`` (the
    Bradley-Terry probability that chosen is preferred); ``raw_*`` without calibration.
    """

    index: int
    margin: float
    raw_margin: float
    p_chosen: float
    raw_p_chosen: float
    chosen: RewardResult
    rejected: RewardResult
    version: int
    status: str
    group: str
    model: str | None = None


class RewardServiceError(Exception):
    """A request the service refused or could not answer.

    ``status`` is the HTTP status (``None`` when no response came back), ``type`` and
    ``message`` come from the service's error envelope ``{"error": {"message", "type",
    "code"}}``, ``request_id`` is the ``X-Request-ID`` of the request (quote it when
    reading the server log), ``attempts`` how many times it was sent.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str = "http_error",
        request_id: str | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.request_id = request_id
        self.retry_after = retry_after
        self.attempts = attempts

    def __str__(self) -> str:
        head = f"{self.status} {self.type}" if self.status is not None else self.type
        where = [f"request id {self.request_id}"] if self.request_id else []
        where.append(f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}")
        return f"{head}: {self.message} ({', '.join(where)})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields survive pickling (Ray, multiprocessing reward workers).
        return (type(self), (self.message,), self.__dict__.copy())


class RewardConnectionError(RewardServiceError):
    """No HTTP response: the connection failed, was dropped, or timed out."""
