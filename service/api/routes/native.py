"""POST /v1/rewards and POST /v1/rewards/compare."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardcal.api.cancellation import with_cancellation
from rewardcal.api.deps import GroupHeader, ReadyRuntime
from rewardcal.api.routes.common import (
    SCORING_ERRORS,
    calibration_info,
    json_response,
    resolve_group,
    resolve_model,
    score_with_timeout,
)
from rewardcal.errors import error_responses
from rewardcal.formatting import pair_messages
from rewardcal.mathutil import sigmoid
from rewardcal.runtime import Runtime
from rewardcal.scoring import ALL_FEATURES, ScoredItem, ScoreInput
from rewardcal_client.protocol.common import Usage
from rewardcal_client.protocol.native import (
    CompareDatum,
    CompareRequest,
    CompareResponse,
    CompareSide,
    RewardDatum,
    RewardsRequest,
    RewardsResponse,
)

router = APIRouter(tags=["native"])


async def rewards_answer(
    body: RewardsRequest, runtime: Runtime, header_group: str | None
) -> Response:
    """``/v1/rewards`` (see :func:`create_rewards`)."""
    model = resolve_model(runtime, body.model)
    inputs = []
    for item in body.items:
        if item.messages is not None:
            messages = tuple(m.model_dump() for m in item.messages)
            inputs.append(ScoreInput(messages=messages))
        else:
            assert item.prompt is not None and item.response is not None
            inputs.append(
                ScoreInput(
                    messages=tuple(pair_messages(item.prompt, item.response)),
                    response=item.response,
                )
            )
    result = await score_with_timeout(
        runtime,
        inputs,
        group=resolve_group(body.calibration_group, header_group),
        observe=body.observe,
        report=ALL_FEATURES,  # the response lists every feature
    )
    return json_response(
        RewardsResponse(
            model=model,
            calibration=calibration_info(result),
            data=[
                RewardDatum(
                    index=it.index,
                    reward=it.reward,
                    raw_reward=it.raw_reward,
                    bias=it.bias,
                    features=it.features,
                )
                for it in result.items
            ],
            usage=Usage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
        )
    )


def _side(item: ScoredItem) -> CompareSide:
    return CompareSide(
        reward=item.reward, raw_reward=item.raw_reward, bias=item.bias, features=item.features
    )


async def compare_answer(
    body: CompareRequest, runtime: Runtime, header_group: str | None
) -> Response:
    """``/v1/rewards/compare`` (see :func:`compare`)."""
    model = resolve_model(runtime, body.model)
    inputs: list[ScoreInput] = []
    for pair in body.pairs:
        for response in (pair.chosen, pair.rejected):
            inputs.append(
                ScoreInput(messages=tuple(pair_messages(pair.prompt, response)), response=response)
            )
    result = await score_with_timeout(
        runtime,
        inputs,
        group=resolve_group(body.calibration_group, header_group),
        observe=body.observe,
        report=ALL_FEATURES,
        what="responses (2 per pair)",
    )
    data = []
    for index in range(len(body.pairs)):
        chosen, rejected = result.items[2 * index], result.items[2 * index + 1]
        margin = chosen.reward - rejected.reward
        raw_margin = chosen.raw_reward - rejected.raw_reward
        data.append(
            CompareDatum(
                index=index,
                chosen=_side(chosen),
                rejected=_side(rejected),
                margin=margin,
                raw_margin=raw_margin,
                p_chosen=sigmoid(margin),
                raw_p_chosen=sigmoid(raw_margin),
            )
        )
    return json_response(
        CompareResponse(
            model=model,
            calibration=calibration_info(result),
            data=data,
            usage=Usage(prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens),
        )
    )


# The routes declare the protocol (OpenAPI, docs); POSTs to their exact paths are served by
# rewardcal.api.scoring_asgi, which calls the same *_answer functions.


@router.post(
    "/v1/rewards",
    response_model=RewardsResponse,
    responses=error_responses(*SCORING_ERRORS),
    summary="Score (prompt, response) pairs or conversations",
)
@with_cancellation
async def create_rewards(
    body: RewardsRequest, runtime: ReadyRuntime, header_group: GroupHeader, raw_request: Request
) -> Response:
    """Raw and calibrated rewards. For ``messages`` the last assistant turn is the response
    whose length (and other features) calibration measures."""
    return await rewards_answer(body, runtime, header_group)


@router.post(
    "/v1/rewards/compare",
    response_model=CompareResponse,
    responses=error_responses(*SCORING_ERRORS),
    summary="Score DPO pairs: calibrated margin and P(chosen preferred)",
)
@with_cancellation
async def compare(
    body: CompareRequest, runtime: ReadyRuntime, header_group: GroupHeader, raw_request: Request
) -> Response:
    """Both sides are scored in one pass and calibrated with the same curve, so the
    calibrated margin removes the length difference between chosen and rejected."""
    return await compare_answer(body, runtime, header_group)
