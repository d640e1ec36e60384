"""Dependencies as Annotated aliases: the runtime, auth, the calibration group."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from service.errors import ErrorType, ServiceError
from service.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise ServiceError(ErrorType.NOT_READY, "the service is starting")
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def require_ready(runtime: RuntimeDep) -> Runtime:
    if not runtime.ready.is_set():
        detail = runtime.start_error or "the model is still loading"
        raise ServiceError(ErrorType.NOT_READY, detail, headers={"Retry-After": "5"})
    return runtime


ReadyRuntime = Annotated[Runtime, Depends(require_ready)]


def _key_matches(presented: str, keys: list[str]) -> bool:
    # Compare against every key without stopping early, each in constant time, so the
    # time taken says nothing about which key (or how much of one) matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


async def require_api_key(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    settings = runtime.settings if runtime is not None else request.app.state.settings
    keys = [k.get_secret_value() for k in settings.api_keys]
    if not keys:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token or not _key_matches(token.strip(), keys):
        raise ServiceError(
            ErrorType.UNAUTHORIZED,
            "missing or invalid API key (send Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


def calibration_group(
    x_calibration_group: Annotated[str | None, Header(max_length=64)] = None,
) -> str | None:
    return x_calibration_group


GroupHeader = Annotated[str | None, Depends(calibration_group)]
