"""The FastAPI application: routers, error handlers, middleware and the lifespan.

The model loads in the background after the server starts listening, so /health answers
at once and /ready turns 200 when the model is up (a 30 s vLLM start must not look like
a dead process). A load failure is logged as one line and reported through ``on_fatal``
so the CLI can exit non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry

from service import __version__
from service.api.deps import require_api_key
from service.api.error_handlers import install_error_handlers
from service.api.middleware import RequestContextMiddleware
from service.api.routes import calibration, native, openrlhf, ops, vllm_compat
from service.backends import BackendStartError, RewardBackend
from service.config import Settings
from service.runtime import Runtime

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
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings, model_path, backend=backend, registry=registry)
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

    async def _start(runtime: Runtime) -> None:
        try:
            await runtime.start()
        except BackendStartError as exc:
            logger.error("model failed to load: %s", exc)
            app.state.fatal_error = str(exc)
            if on_fatal is not None:
                on_fatal(str(exc))

    app = FastAPI(
        title="rewardcal",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Trainers' scripts and curl often omit Content-Type; the body is JSON regardless.
        strict_content_type=False,
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

    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        metrics_getter=current_metrics,
    )
    return app
