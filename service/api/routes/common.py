"""Helpers shared by the scoring routes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pydantic import BaseModel
from starlette.responses import Response

from rewardcal.calibration import validate_group
from rewardcal.errors import ErrorType, ServiceError
from rewardcal.runtime import Runtime
from rewardcal.scoring import ScoreInput, ScoreResult
from rewardcal_client.protocol.common import CalibrationInfo

# Statuses every scoring route can answer besides 200 (declared in the OpenAPI spec).
SCORING_ERRORS = (400, 401, 404, 413, 422, 500, 502, 503, 504)


def served_model_names(runtime: Runtime) -> list[str]:
    """The ids /v1/models lists: the served name, then the path the model was loaded from
    when no name was configured (vLLM names a model after its path unless
    ``--served-model-name`` is set, so its clients send the path)."""
    names = [runtime.model_id]
    path = str(runtime.model_path)
    if runtime.settings.served_model_name is None and path != runtime.model_id:
        names.append(path)
    return names


def _same_path(requested: str, model_path: Path) -> bool:
    # Clients configured for vLLM send the path they gave it (relative, with ~ or a trailing
    # slash, or through a symlink): compare normalised and resolved forms.
    if os.sep not in requested and not requested.startswith("~"):
        return False
    candidate = Path(os.path.normpath(os.path.expanduser(requested)))
    if candidate == Path(os.path.normpath(model_path)):
        return True
    try:
        return candidate.resolve() == model_path.resolve()
    except (OSError, ValueError):  # a path the OS refuses (NUL byte): not ours
        return False


def resolve_model(runtime: Runtime, requested: str | None) -> str:
    """The served model id for the request's ``model``: omitted, the served name, or the
    path the model was loaded from (as vLLM's own server accepts it)."""
    if requested is None or requested == "" or requested == runtime.model_id:
        return runtime.model_id
    if _same_path(requested, runtime.model_path):
        return runtime.model_id
    served = ", ".join(repr(n) for n in served_model_names(runtime))
    raise ServiceError(
        ErrorType.NOT_FOUND, f"model {requested!r} is not served here (served: {served})"
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
    report: frozenset[str] = frozenset(),
    what: str = "items",
) -> ScoreResult:
    timeout = runtime.settings.request_timeout_s
    try:
        async with asyncio.timeout(timeout):
            return await runtime.scoring.score(
                inputs,
                group=group,
                observe=observe,
                max_tokens=max_tokens,
                report=report,
                what=what,
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


def json_response(model: BaseModel) -> Response:
    """The answer, serialized once by pydantic's own serializer. Routes still declare their
    ``response_model`` (the OpenAPI spec); returning a Response skips FastAPI's second
    validation of a model that was validated when it was built."""
    return Response(
        type(model).__pydantic_serializer__.to_json(model), media_type="application/json"
    )
