"""Helpers shared by the scoring routes."""

from __future__ import annotations

import asyncio

from service.calibration import validate_group
from service.errors import ErrorType, ServiceError
from service.runtime import Runtime
from service.schemas.common import CalibrationInfo
from service.scoring import ScoreInput, ScoreResult

# Statuses every scoring route can answer besides 200 (declared in the OpenAPI spec).
SCORING_ERRORS = (400, 401, 404, 413, 422, 500, 502, 503, 504)


def resolve_model(runtime: Runtime, requested: str | None) -> str:
    if requested is None or requested == "" or requested == runtime.model_id:
        return runtime.model_id
    raise ServiceError(
        ErrorType.NOT_FOUND,
        f"model {requested!r} is not served here (served: {runtime.model_id!r})",
    )


def resolve_group(body_group: str | None, header_group: str | None) -> str:
    return validate_group(body_group if body_group else header_group)


async def score_with_timeout(
    runtime: Runtime,
    inputs: list[ScoreInput],
    *,
    group: str,
    observe: bool,
    max_tokens: int | None = None,
) -> ScoreResult:
    timeout = runtime.settings.request_timeout_s
    try:
        async with asyncio.timeout(timeout):
            return await runtime.scoring.score(
                inputs, group=group, observe=observe, max_tokens=max_tokens
            )
    except TimeoutError:
        raise ServiceError(
            ErrorType.TIMEOUT, f"no answer within {timeout:g} s; the request was dropped"
        ) from None


def calibration_info(result: ScoreResult) -> CalibrationInfo:
    curve = result.curve
    return CalibrationInfo(
        group=curve.group, version=curve.version, status=str(curve.status), method=curve.method
    )
