"""GET /health, /ready, /v1/models, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from rewardcal.api.deps import RuntimeDep
from rewardcal.api.routes.common import served_model_names
from rewardcal.errors import ErrorType, ServiceError, error_responses
from rewardcal.metrics import exposition
from rewardcal.schemas.ops import HealthResponse, ModelCard, ModelList, ReadyResponse

health_router = APIRouter(tags=["ops"])
router = APIRouter(tags=["ops"])
metrics_router = APIRouter(tags=["ops"])


@health_router.get("/health", response_model=HealthResponse, summary="Liveness (never needs a key)")
async def health() -> HealthResponse:
    return HealthResponse()


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses=error_responses(401, 503),
    summary="Readiness: 200 once the model is loaded, 503 before",
)
async def ready(runtime: RuntimeDep) -> ReadyResponse:
    if not runtime.ready.is_set():
        detail = runtime.start_error or "the model is still loading"
        raise ServiceError(ErrorType.NOT_READY, detail, headers={"Retry-After": "5"})
    backend_ok = await runtime.backend.health()
    if not backend_ok:
        raise ServiceError(ErrorType.NOT_READY, f"backend {runtime.backend.name} is unhealthy")
    return ReadyResponse(ready=True, model=runtime.model_id, backend=runtime.backend.name)


@router.get(
    "/v1/models",
    response_model=ModelList,
    responses=error_responses(401),
    summary="Served models (OpenAI shape)",
)
async def models(runtime: RuntimeDep) -> ModelList:
    return ModelList(
        data=[
            ModelCard(
                id=name,
                created=runtime.created,
                root=str(runtime.model_path),
                max_model_len=runtime.backend.limits.max_input_tokens,
                backend=runtime.backend.name,
            )
            for name in served_model_names(runtime)
        ]
    )


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **error_responses(401)},
    summary="Prometheus metrics",
)
async def metrics(runtime: RuntimeDep) -> Response:
    return Response(exposition(runtime.registry), media_type=CONTENT_TYPE_LATEST)
