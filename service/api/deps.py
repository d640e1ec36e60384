"""Dependencies as Annotated aliases: the runtime, auth (two roles), the calibration group.

Roles (docs/security.md): with no keys configured everything is open (loopback default).
Otherwise every route but /health needs a key; scoring keys (``api_keys``) score and read
calibration state, admin keys (``admin_api_keys``) also change it."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from rewardcal.config import Settings
from rewardcal.errors import ErrorType, ServiceError
from rewardcal.runtime import Runtime

# Dependencies are ``async def`` although they do not await: FastAPI runs plain ``def``
# dependencies in a worker thread, a thread hand-off per dependency per request.


def started_runtime(runtime: Runtime | None) -> Runtime:
    if runtime is None:
        raise ServiceError(ErrorType.NOT_READY, "the service is starting")
    return runtime


def ready_runtime(runtime: Runtime | None) -> Runtime:
    """The runtime if it can score; else 503 (starting, or the model still loading)."""
    runtime = started_runtime(runtime)
    if not runtime.ready.is_set():
        detail = runtime.start_error or "the model is still loading"
        raise ServiceError(ErrorType.NOT_READY, detail, headers={"Retry-After": "5"})
    return runtime


async def get_runtime(request: Request) -> Runtime:
    return started_runtime(getattr(request.app.state, "runtime", None))


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def require_ready(runtime: RuntimeDep) -> Runtime:
    return ready_runtime(runtime)


ReadyRuntime = Annotated[Runtime, Depends(require_ready)]


def _key_matches(presented: str, keys: list[str]) -> bool:
    # Compare against every key without stopping early, each in constant time, so the
    # time taken says nothing about which key (or how much of one) matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


def _settings(request: Request) -> Settings:
    return settings_of(request.app.state)


def settings_of(state: Any) -> Settings:
    """The running settings (the runtime's once started) of an app's ``state``."""
    runtime: Runtime | None = getattr(state, "runtime", None)
    return runtime.settings if runtime is not None else state.settings


def _presented_key(authorization: str | None, settings: Settings) -> str:
    """The request's Bearer key if it is one of the configured keys (either role)."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    keys = [k.get_secret_value() for k in [*settings.api_keys, *settings.admin_api_keys]]
    if scheme.lower() != "bearer" or not token or not _key_matches(token, keys):
        raise ServiceError(
            ErrorType.UNAUTHORIZED,
            "missing or invalid API key (send Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


def check_api_key(authorization: str | None, settings: Settings) -> None:
    """Scoring and reading: any configured key (scoring or admin). Open with no keys."""
    if settings.keys_required:
        _presented_key(authorization, settings)


async def require_api_key(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    check_api_key(authorization, _settings(request))


async def require_admin_key(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    """Changing calibration state: an admin key (403 for a scoring key). Open with no keys."""
    settings = _settings(request)
    if not settings.keys_required:
        return
    token = _presented_key(authorization, settings)
    admin = [k.get_secret_value() for k in settings.admin_api_keys]
    if not _key_matches(token, admin):
        raise ServiceError(
            ErrorType.FORBIDDEN,
            "this route changes calibration state and needs an admin key (admin_api_keys)"
            if admin
            else "this route changes calibration state and needs an admin key; none is "
            "configured (set REWARDCAL_ADMIN_API_KEYS)",
        )


AdminOnly = [Depends(require_admin_key)]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def security_warnings(settings: Settings) -> list[str]:
    """What an operator should hear at start-up about who can reach the service."""
    warnings = []
    loopback = settings.host in LOOPBACK_HOSTS or settings.host.startswith("127.")
    if not loopback and not settings.keys_required:
        warnings.append(
            f"serving on {settings.host} with no API keys: anyone who can reach this port can "
            "score and change calibration state; set REWARDCAL_API_KEYS and "
            "REWARDCAL_ADMIN_API_KEYS (docs/security.md)"
        )
    return warnings


GROUP_HEADER_MAX_LENGTH = 64


async def calibration_group(
    x_calibration_group: Annotated[str | None, Header(max_length=GROUP_HEADER_MAX_LENGTH)] = None,
) -> str | None:
    return x_calibration_group


GroupHeader = Annotated[str | None, Depends(calibration_group)]
