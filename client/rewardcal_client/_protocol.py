"""Request bodies and response parsing, shared by the sync and async clients (no I/O).

Answers are read through the wire models in :mod:`rewardcal_client.protocol`, the same
models the server answers with, so a shape is defined once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from rewardcal_client.protocol.common import CalibrationInfo
from rewardcal_client.protocol.native import (
    CompareResponse,
    CompareSide,
    RewardDatum,
    RewardsResponse,
)
from rewardcal_client.protocol.openrlhf import GetRewardResponse
from rewardcal_client.types import (
    ComparePairInput,
    CompareResult,
    RewardResult,
    RewardServiceError,
    ScoreItem,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_GROUP = "default"

REWARDS_PATH = "/v1/rewards"
COMPARE_PATH = "/v1/rewards/compare"
GET_REWARD_PATH = "/get_reward"


@dataclass(frozen=True, slots=True)
class Chunk:
    offset: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Plan(Generic[T]):
    """A batched call: the chunks to POST to ``path`` and how to read each answer."""

    path: str
    chunks: list[Chunk]
    parse: Callable[[Any, int], list[T]]

    def merge(self, answers: Sequence[list[T]]) -> list[T]:
        return [result for answer in answers for result in answer]


def check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(n, start + size)) for start in range(0, n, size)]


def _message(message: Any) -> dict[str, Any]:
    """One chat message for the server: ``content: None`` (OpenAI tool-call turns) is sent
    as ``""``; ``tool_calls`` and ``tool_call_id`` travel so the server's chat template can
    render the calls."""
    if not isinstance(message, Mapping):
        raise TypeError(f"a chat message must be a mapping with role and content, got {message!r}")
    content = message.get("content")
    if content is None:
        content = ""
    elif not isinstance(content, str):  # multimodal content parts: keep the text parts
        parts = content if isinstance(content, Iterable) else [content]
        content = "".join(
            str(p.get("text", "")) if isinstance(p, Mapping) else str(p) for p in parts
        )
    out: dict[str, Any] = {"role": str(message.get("role", "")), "content": content}
    calls = message.get("tool_calls")
    if calls:
        out["tool_calls"] = [_tool_call(c) for c in calls]
    if message.get("tool_call_id") is not None:
        out["tool_call_id"] = str(message["tool_call_id"])
    return out


def _tool_call(call: Any) -> dict[str, Any]:
    if not isinstance(call, Mapping):
        raise TypeError(f"a tool call must be a mapping (OpenAI shape), got {call!r}")
    return {str(k): v for k, v in call.items()}


def messages_of(conversation: Iterable[Any]) -> list[dict[str, Any]]:
    return [_message(m) for m in conversation]


def score_item(item: ScoreItem) -> dict[str, Any]:
    """One ``/v1/rewards`` item from a pair tuple, a dict, or a conversation."""
    if isinstance(item, Mapping):
        if "messages" in item:
            return {"messages": messages_of(item["messages"])}
        if "prompt" in item and "response" in item:
            return {"prompt": str(item["prompt"]), "response": str(item["response"])}
        raise TypeError(f"an item dict needs prompt and response, or messages: {item!r}")
    if isinstance(item, str):
        raise TypeError("a bare string is not an item: use (prompt, response) or score_texts()")
    if isinstance(item, Sequence):
        if len(item) == 2 and all(isinstance(x, str) for x in item):
            return {"prompt": item[0], "response": item[1]}
        if all(isinstance(m, Mapping) for m in item):
            return {"messages": messages_of(item)}
    raise TypeError(
        f"cannot score {item!r}: give (prompt, response), "
        "{'prompt', 'response'}, {'messages': [...]} or a list of messages"
    )


def compare_pair(pair: ComparePairInput) -> dict[str, str]:
    if isinstance(pair, Mapping):
        try:
            return {k: str(pair[k]) for k in ("prompt", "chosen", "rejected")}
        except KeyError as exc:
            raise TypeError(f"a pair dict needs prompt, chosen and rejected: {pair!r}") from exc
    if (
        isinstance(pair, Sequence)
        and not isinstance(pair, str)
        and len(pair) == 3
        and all(isinstance(x, str) for x in pair)
    ):
        return {"prompt": pair[0], "chosen": pair[1], "rejected": pair[2]}
    raise TypeError(f"a pair is (prompt, chosen, rejected) or a dict of them, got {pair!r}")


def _options(group: str | None, observe: bool, model: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"observe": observe}
    if group is not None:
        body["calibration_group"] = group
    if model is not None:
        body["model"] = model
    return body


def _answer(model: type[M], body: Any, path: str) -> M:
    """The answer read through the same wire model the server answers with."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise RewardServiceError(
            f"unexpected {path} answer ({exc.error_count()} problems: "
            f"{exc.errors(include_url=False)[0]['msg']})",
            type="invalid_response",
        ) from exc


def _result(
    index: int, side: RewardDatum | CompareSide, info: CalibrationInfo, model: str
) -> RewardResult:
    return RewardResult(
        index=index,
        reward=side.reward,
        raw_reward=side.raw_reward,
        bias=side.bias,
        version=info.version,
        status=info.status,
        group=info.group,
        features=MappingProxyType(dict(side.features)),
        model=model,
        method=info.method,
    )


def _parse_rewards(body: Any, offset: int) -> list[RewardResult]:
    answer = _answer(RewardsResponse, body, REWARDS_PATH)
    results = [_result(offset + d.index, d, answer.calibration, answer.model) for d in answer.data]
    return sorted(results, key=lambda r: r.index)


def _parse_compare(body: Any, offset: int) -> list[CompareResult]:
    answer = _answer(CompareResponse, body, COMPARE_PATH)
    info = answer.calibration
    results = [
        CompareResult(
            index=offset + d.index,
            margin=d.margin,
            raw_margin=d.raw_margin,
            p_chosen=d.p_chosen,
            raw_p_chosen=d.raw_p_chosen,
            chosen=_result(offset + d.index, d.chosen, info, answer.model),
            rejected=_result(offset + d.index, d.rejected, info, answer.model),
            version=info.version,
            status=info.status,
            group=info.group,
            model=answer.model,
        )
        for d in answer.data
    ]
    return sorted(results, key=lambda r: r.index)


def _parse_get_reward(group: str) -> Callable[[Any, int], list[RewardResult]]:
    def parse(body: Any, offset: int) -> list[RewardResult]:
        answer = _answer(GetRewardResponse, body, GET_REWARD_PATH)
        rewards, logs = answer.rewards, answer.extra_logs
        n = len(rewards)
        try:
            raw = logs.get("raw_reward", rewards)
            bias = logs.get("bias", [0.0] * n)
            versions: list[float | None] = list(logs.get("calibration_version", [None] * n))
            chars = logs.get("response_chars")
            tokens = logs.get("response_tokens")
            out = []
            for i, reward in enumerate(rewards):
                features: dict[str, float] = {}
                if chars is not None:
                    features["chars"] = chars[i]
                if tokens is not None:
                    features["tokens"] = tokens[i]
                version = versions[i]
                out.append(
                    RewardResult(
                        index=offset + i,
                        reward=reward,
                        raw_reward=raw[i],
                        bias=bias[i],
                        version=None if version is None else int(version),
                        status=None,
                        group=group,
                        features=MappingProxyType(features),
                    )
                )
        except IndexError as exc:
            raise RewardServiceError(
                f"unexpected {GET_REWARD_PATH} answer: extra_logs shorter than rewards",
                type="invalid_response",
            ) from exc
        return out

    return parse


def plan_score(
    items: Iterable[ScoreItem],
    *,
    batch_size: int,
    group: str | None,
    observe: bool,
    model: str | None,
) -> Plan[RewardResult]:
    normalized = [score_item(item) for item in items]
    options = _options(group, observe, model)
    chunks = [
        Chunk(start, {"items": normalized[start:end], **options})
        for start, end in _spans(len(normalized), check_batch_size(batch_size))
    ]
    return Plan(REWARDS_PATH, chunks, _parse_rewards)


def plan_compare(
    pairs: Iterable[ComparePairInput],
    *,
    batch_size: int,
    group: str | None,
    observe: bool,
    model: str | None,
) -> Plan[CompareResult]:
    normalized = [compare_pair(pair) for pair in pairs]
    options = _options(group, observe, model)
    chunks = [
        Chunk(start, {"pairs": normalized[start:end], **options})
        for start, end in _spans(len(normalized), check_batch_size(batch_size))
    ]
    return Plan(COMPARE_PATH, chunks, _parse_compare)


def plan_texts(
    texts: Iterable[str],
    prompts: Iterable[str | None] | None,
    *,
    batch_size: int,
    group: str | None,
    observe: bool,
) -> Plan[RewardResult]:
    queries = list(texts)
    for text in queries:
        if not isinstance(text, str):
            raise TypeError(f"score_texts takes strings, got {text!r}")
    prompt_list = None if prompts is None else list(prompts)
    if prompt_list is not None and len(prompt_list) != len(queries):
        raise ValueError(f"{len(prompt_list)} prompts for {len(queries)} texts")
    options = _options(group, observe, None)
    chunks = []
    for start, end in _spans(len(queries), check_batch_size(batch_size)):
        body: dict[str, Any] = {"query": queries[start:end], **options}
        if prompt_list is not None:
            body["prompts"] = prompt_list[start:end]
        chunks.append(Chunk(start, body))
    return Plan(GET_REWARD_PATH, chunks, _parse_get_reward(group or DEFAULT_GROUP))
