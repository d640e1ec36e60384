"""POST /get_reward: OpenRLHF's remote reward model protocol."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from rewardcal.api.cancellation import with_cancellation
from rewardcal.api.deps import GroupHeader, ReadyRuntime
from rewardcal.api.routes.common import (
    SCORING_ERRORS,
    json_response,
    resolve_group,
    score_with_timeout,
)
from rewardcal.errors import error_responses
from rewardcal.runtime import Runtime
from rewardcal.scoring import ScoreInput
from rewardcal_client.protocol.openrlhf import GetRewardRequest, GetRewardResponse

router = APIRouter(tags=["openrlhf"])

REPORTED = frozenset({"chars", "tokens"})
"""Features extra_logs carries (response_chars, response_tokens)."""


def response_part(query: str, prompt: str | None) -> str | None:
    """The response inside an already-templated query (for the bias features); None: let
    the scoring path locate it with the chat template."""
    if prompt is not None and query.startswith(prompt):
        return query[len(prompt) :]
    return None


async def get_reward_answer(
    body: GetRewardRequest, runtime: Runtime, header_group: str | None
) -> Response:
    """``/get_reward`` (see :func:`get_reward`)."""
    prompts: list[str | None] = list(body.prompts) if body.prompts else [None] * len(body.query)
    inputs = [
        ScoreInput(text=query, response=response_part(query, prompt))
        for query, prompt in zip(body.query, prompts, strict=True)
    ]
    result = await score_with_timeout(
        runtime,
        inputs,
        group=resolve_group(body.calibration_group, header_group),
        observe=body.observe,
        report=REPORTED,
        what="queries",
    )
    rewards = [it.reward for it in result.items]
    version = float(result.curve.version)
    return json_response(
        GetRewardResponse(
            rewards=rewards,
            scores=rewards,
            extra_logs={
                "raw_reward": [it.raw_reward for it in result.items],
                "bias": [it.bias for it in result.items],
                "response_chars": [it.features["chars"] for it in result.items],
                "response_tokens": [it.features["tokens"] for it in result.items],
                "calibration_version": [version] * len(result.items),
                "prompt_matched": [
                    float(prompt is not None and query.startswith(prompt))
                    for query, prompt in zip(body.query, prompts, strict=True)
                ],
                "response_located": [
                    0.0 if it.response_located is False else 1.0 for it in result.items
                ],
            },
        )
    )


# The route declares the protocol (OpenAPI, docs); POSTs to its exact path are served by
# rewardcal.api.scoring_asgi, which calls get_reward_answer.


@router.post(
    "/get_reward",
    response_model=GetRewardResponse,
    responses=error_responses(*SCORING_ERRORS),
    summary="OpenRLHF remote reward (v0.8 batches and v0.9+ single samples)",
)
@with_cancellation
async def get_reward(
    body: GetRewardRequest, runtime: ReadyRuntime, header_group: GroupHeader, raw_request: Request
) -> Response:
    """``query`` holds templated prompt+response texts, scored as they are. The response part
    (measured for calibration) is ``query[len(prompt):]`` when ``prompts`` are given and the
    query starts with its prompt, else it is located with the chat template (the whole
    query when the template cannot locate it: ``extra_logs.response_located`` is 0).
    ``rewards`` and ``scores`` are calibrated; ``extra_logs`` carries the raw reward and the
    response length, and ``prompt_matched`` (1 when the query starts with its prompt, 0 when
    a prompt was given but does not start the query: a client whose prompts and queries
    disagree). ``prompts`` or ``labels`` of another length than ``query`` are refused
    (422)."""
    return await get_reward_answer(body, runtime, header_group)
