"""POST /classify and POST /pooling in vLLM's shapes (vLLM clients, verl).

``data[i].probs`` (and ``data[i].data`` on /pooling) hold the calibrated score, passed
through a sigmoid unless the request sends ``use_activation: false`` (or the legacy
``activation: false``), exactly as vLLM treats a one-label model.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardcal.api.cancellation import with_cancellation
from rewardcal.api.deps import GroupHeader, ReadyRuntime
from rewardcal.api.middleware import new_request_id
from rewardcal.api.routes.common import (
    SCORING_ERRORS,
    calibration_info,
    json_response,
    resolve_group,
    resolve_model,
    score_with_timeout,
)
from rewardcal.errors import ErrorType, ServiceError, error_responses
from rewardcal.mathutil import sigmoid
from rewardcal.runtime import Runtime
from rewardcal.scoring import ScoredItem, ScoreInput, ScoreResult
from rewardcal_client.protocol.vllm_compat import (
    ClassifyDatum,
    ClassifyRequest,
    ClassifyResponse,
    PoolingDatum,
    PoolingResponse,
    VllmUsage,
)

router = APIRouter(tags=["vllm"])


def _activation(value: float, apply: bool) -> float:
    return sigmoid(value) if apply else value


def _inputs(body: ClassifyRequest) -> list[ScoreInput]:
    if body.messages is not None:
        return [ScoreInput(messages=tuple(m.model_dump() for m in body.messages))]
    value = body.input
    if isinstance(value, str):
        return [ScoreInput(text=value)]
    assert isinstance(value, list)
    if all(isinstance(v, str) for v in value):
        return [ScoreInput(text=str(v)) for v in value]
    if all(isinstance(v, int) for v in value):
        return [ScoreInput(token_ids=tuple(v for v in value if isinstance(v, int)))]
    if all(isinstance(v, list) for v in value):
        return [ScoreInput(token_ids=tuple(int(t) for t in v)) for v in value]  # type: ignore[union-attr]
    raise ServiceError(ErrorType.VALIDATION, "input must be text(s) or token id list(s)")


def _max_tokens(runtime: Runtime, body: ClassifyRequest) -> int | None:
    requested = body.truncate_prompt_tokens
    if requested is None or requested == -1:
        return None
    limit = runtime.scoring.max_input_tokens
    if requested > limit:
        raise ServiceError(
            ErrorType.INVALID_REQUEST,
            f"truncate_prompt_tokens ({requested}) exceeds the model's limit ({limit})",
        )
    if requested == 0:
        raise ServiceError(ErrorType.INVALID_REQUEST, "truncate_prompt_tokens must be positive")
    return requested


async def _score(
    body: ClassifyRequest, runtime: Runtime, header_group: str | None
) -> tuple[str, ScoreResult]:
    model = resolve_model(runtime, body.model)
    if body.task not in (None, "classify"):
        raise ServiceError(
            ErrorType.INVALID_REQUEST,
            f"task {body.task!r} is not supported; this server serves reward models (classify)",
        )
    inputs = _inputs(body)
    result = await score_with_timeout(
        runtime,
        inputs,
        group=resolve_group(body.calibration_group, header_group),
        observe=body.observe,
        max_tokens=_max_tokens(runtime, body),
        what="inputs",
    )
    return model, result


def _usage(result: ScoreResult) -> VllmUsage:
    return VllmUsage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens)


def _datum_fields(it: ScoredItem, apply: bool) -> dict[str, Any]:
    """What a /classify and a /pooling datum share: the (activated) calibrated score as
    ``probs``, and rewardcal's own raw and calibrated rewards."""
    return {
        "index": it.index,
        "probs": [_activation(it.reward, apply)],
        "raw_reward": it.raw_reward,
        "reward": it.reward,
        "response_located": it.response_located,
    }


def _envelope(prefix: str, model: str, result: ScoreResult) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{new_request_id()}",
        "created": int(time.time()),
        "model": model,
        "usage": _usage(result),
        "calibration": calibration_info(result),
    }


async def classify_answer(
    body: ClassifyRequest, runtime: Runtime, header_group: str | None
) -> Response:
    """``/classify``: ``data[i].probs`` is ``[calibrated score]`` (see :func:`classify`)."""
    model, result = await _score(body, runtime, header_group)
    apply = body.apply_activation
    data = [ClassifyDatum(label="LABEL_0", **_datum_fields(it, apply)) for it in result.items]
    return json_response(ClassifyResponse(data=data, **_envelope("classify", model, result)))


async def pooling_answer(
    body: ClassifyRequest, runtime: Runtime, header_group: str | None
) -> Response:
    """``/pooling``: ``data[i].data`` and ``data[i].probs`` are ``[calibrated score]``."""
    model, result = await _score(body, runtime, header_group)
    apply = body.apply_activation
    data = []
    for it in result.items:
        fields = _datum_fields(it, apply)
        data.append(PoolingDatum(data=fields["probs"], **fields))
    return json_response(PoolingResponse(data=data, **_envelope("pool", model, result)))


# The routes below declare the protocol (OpenAPI, docs); POSTs to their exact paths are
# served by rewardcal.api.scoring_asgi, which calls the same *_answer functions.


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=error_responses(*SCORING_ERRORS),
    summary="vLLM-compatible classify (calibrated reward in probs)",
)
@with_cancellation
async def classify(
    body: ClassifyRequest, runtime: ReadyRuntime, header_group: GroupHeader, raw_request: Request
) -> Response:
    """vLLM's ``/classify``. Text ``input`` is already templated and scored as is; the
    response measured for calibration is located in it with the model's chat template (after
    the last assistant header, before the end-of-turn), or is the whole text when the
    template cannot locate it (``response_located: false``). ``messages`` use the model's
    chat template and their last assistant turn is the response."""
    return await classify_answer(body, runtime, header_group)


@router.post(
    "/pooling",
    response_model=PoolingResponse,
    responses=error_responses(*SCORING_ERRORS),
    summary="vLLM-compatible pooling with task classify (verl)",
)
@with_cancellation
async def pooling(
    body: ClassifyRequest, runtime: ReadyRuntime, header_group: GroupHeader, raw_request: Request
) -> Response:
    """vLLM's ``/pooling`` for a classify task: ``data[i].data`` (and ``data[i].probs``)
    hold ``[calibrated score]``."""
    return await pooling_answer(body, runtime, header_group)
