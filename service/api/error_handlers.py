"""Handlers that route every failure through the one envelope."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rewardcal.errors import ErrorType, ServiceError, envelope, error_type_for_status
from rewardcal_client.protocol.common import INVALID_UNICODE

logger = logging.getLogger(__name__)


def error_response(
    error_type: ErrorType,
    message: str,
    status: int | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = envelope(error_type, message, status)
    return JSONResponse(body, status_code=body["error"]["code"], headers=headers)


def describe_validation(errors: list[dict[str, Any]]) -> tuple[ErrorType, str]:
    if any(e.get("type") == "json_invalid" for e in errors):
        return ErrorType.INVALID_REQUEST, "request body is not valid JSON"
    for error in errors:
        if error.get("type") == INVALID_UNICODE:
            loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            return ErrorType.INVALID_REQUEST, f"{loc}: {error.get('msg')}"
    not_an_object = {"model_attributes_type", "dict_type", "model_type"}
    if any(tuple(e.get("loc", ())) == ("body",) and e.get("type") in not_an_object for e in errors):
        return (
            ErrorType.INVALID_REQUEST,
            "request body must be a JSON object (send Content-Type: application/json)",
        )
    parts = []
    for error in errors[:5]:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {error.get('msg', 'invalid')}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return ErrorType.VALIDATION, "; ".join(parts) + more


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        # The metrics middleware counts errors_total by this type: a status alone cannot
        # tell overload (503) from a model still loading (503).
        request.state.error_type = str(exc.error_type)
        return error_response(exc.error_type, exc.message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        error_type, message = describe_validation(list(exc.errors()))
        return error_response(error_type, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = error_type_for_status(exc.status_code)
        message = exc.detail if isinstance(exc.detail, str) else error_type.value
        return error_response(error_type, message, exc.status_code, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The trace goes to the log; the client gets a message without internals.
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(ErrorType.INTERNAL, "internal server error")
