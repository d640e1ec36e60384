"""The FastAPI application: routers, error handlers, middleware and the lifespan.

The model loads in the background after the server starts listening, so /health answers
at once and /ready turns 200 when the model is up (a 30 s vLLM start must not look like
a dead process). A load failure is logged as one line and reported through ``on_fatal``
so the CLI can exit non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from rewardcal import __version__
from rewardcal.api.deps import require_api_key
from rewardcal.api.error_handlers import install_error_handlers
from rewardcal.api.middleware import RequestContextMiddleware
from rewardcal.api.routes import calibration, native, openrlhf, ops, vllm_compat
from rewardcal.api.scoring_asgi import ScoringFastPath
from rewardcal.backends import BackendStartError, RewardBackend
from rewardcal.config import Settings
from rewardcal.errors import ErrorType, envelope
from rewardcal.metrics import multiprocess_dir
from rewardcal.pipeline.artifacts import ModelArtifacts
from rewardcal.runtime import Runtime

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Reward-model serving for RLHF with online length-bias calibration
(post-hoc reward calibration, Huang et al. 2024).

Every score comes back raw and calibrated, with the calibration curve version that
produced it. Errors always use one envelope: `{"error": {"message", "type", "code"}}`.
"""


def create_app(
    settings: Settings,
    model_path: Path,
    *,
    backend: RewardBackend | None = None,
    registry: CollectorRegistry | None = None,
    on_fatal: Callable[[str], None] | None = None,
    artifacts: ModelArtifacts | None = None,
    freeze_heap: bool = False,
) -> FastAPI:
    """``freeze_heap`` (server processes, not tests): once the model is up, move what
    start-up allocated out of the garbage collector's reach (see :func:`freeze_startup_heap`)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(
            settings, model_path, backend=backend, registry=registry, artifacts=artifacts
        )
        app.state.runtime = runtime
        loader = asyncio.create_task(_start(runtime), name="rewardcal-load")
        try:
            yield
        finally:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError, BackendStartError):
                await loader
            await runtime.stop()
            app.state.runtime = None
            if multiprocess_dir() is not None:
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(os.getpid())  # its live gauges leave the sum

    async def _start(runtime: Runtime) -> None:
        try:
            await runtime.start()
            if freeze_heap:
                await _warm_up(runtime)
                freeze_startup_heap()
        except BackendStartError as exc:
            logger.error("model failed to load: %s", exc)
            app.state.fatal_error = str(exc)
            if on_fatal is not None:
                on_fatal(str(exc))

    # /docs and /openapi.json are open unless protect_metrics asks for keys there too.
    docs_open = not (settings.protect_metrics and settings.keys_required)
    app = RewardcalApp(
        title="rewardcal",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Trainers' scripts and curl often omit Content-Type; the body is JSON regardless.
        strict_content_type=False,
        docs_url="/docs" if docs_open else None,
        redoc_url="/redoc" if docs_open else None,
        openapi_url="/openapi.json" if docs_open else None,
    )
    app.state.settings = settings
    app.state.runtime = None
    app.state.fatal_error = None
    install_error_handlers(app)

    keyed = [Depends(require_api_key)]
    app.include_router(ops.health_router)
    app.include_router(ops.router, dependencies=keyed)
    app.include_router(ops.metrics_router, dependencies=keyed if settings.protect_metrics else [])
    app.include_router(native.router, dependencies=keyed)
    app.include_router(openrlhf.router, dependencies=keyed)
    app.include_router(vllm_compat.router, dependencies=keyed)
    app.include_router(calibration.router, dependencies=keyed)

    def current_metrics() -> object:
        runtime = app.state.runtime
        return runtime.metrics if runtime is not None else None

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = use_envelope_for_validation_errors(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if not docs_open:
        _add_keyed_docs(app, keyed)

    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        metrics_getter=current_metrics,
    )
    app.request_context = lambda inner: RequestContextMiddleware(
        inner, max_body_bytes=settings.max_body_bytes, metrics_getter=current_metrics
    )
    return app


class RewardcalApp(FastAPI):
    """FastAPI with the scoring routes' plain-ASGI path in front of its middleware stack
    (rewardcal.api.scoring_asgi); ``request_context`` wraps that path in the same
    request-context middleware as FastAPI's own stack."""

    request_context: Callable[[ASGIApp], ASGIApp] = staticmethod(lambda inner: inner)

    def build_middleware_stack(self) -> ASGIApp:
        return ScoringFastPath(self, super().build_middleware_stack(), self.request_context)


async def _warm_up(runtime: Runtime) -> None:
    try:
        await asyncio.to_thread(runtime.calibration.warm_up)
    except Exception:  # noqa: BLE001 - the first refit will load them instead
        logger.warning("calibration kernels could not be loaded ahead", exc_info=True)


def freeze_startup_heap() -> None:
    """Collect once, then freeze what is left (``gc.freeze``), as vLLM's server does
    (``vllm.utils.gc_utils.freeze_gc_heap``).

    Start-up leaves many long-lived objects (torch, transformers, the tokenizer, pydantic
    schemas). Each full collection walks all of them: 200-430 ms of the event loop's
    thread, every few seconds under bench/frontend.py's load (0.7 s for a full collection
    right after start-up, 0 once frozen: bench/bench_gc_freeze.py). Frozen objects are
    never scanned (nor freed if they become cyclic garbage, which start-up objects of a
    server process do not)."""
    gc.collect()
    gc.freeze()


def _add_keyed_docs(app: FastAPI, keyed: list[Any]) -> None:
    @app.get("/openapi.json", include_in_schema=False, dependencies=keyed)
    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=keyed)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="rewardcal")


def use_envelope_for_validation_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents its own 422 shape; ours is the one envelope. Rewrite those
    responses (and every operation's 500) to the envelope schema."""
    ref = {"$ref": "#/components/schemas/ErrorEnvelope"}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if "ErrorEnvelope" not in components:
        from rewardcal.errors import ErrorEnvelope

        components["ErrorEnvelope"] = ErrorEnvelope.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components.update(components["ErrorEnvelope"].pop("$defs", {}))
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status, error_type in (("422", ErrorType.VALIDATION), ("500", ErrorType.INTERNAL)):
                if status == "422" and status not in responses:
                    continue
                responses[status] = {
                    "description": error_type.value.replace("_", " "),
                    "content": {
                        "application/json": {
                            "schema": ref,
                            "example": envelope(error_type, "example message"),
                        }
                    },
                }
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema
