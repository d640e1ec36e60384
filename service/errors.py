"""One error path: a closed set of error types, one status table, one JSON envelope.

Every failure, including pydantic validation and Starlette's own HTTP errors, leaves the
service as ``{"error": {"message", "type", "code"}}``. Messages are written for the client;
stack traces go to the log only.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel


class ErrorType(enum.StrEnum):
    INVALID_REQUEST = "invalid_request_error"
    VALIDATION = "validation_error"
    NOT_FOUND = "not_found_error"
    METHOD_NOT_ALLOWED = "method_not_allowed_error"
    PAYLOAD_TOO_LARGE = "payload_too_large_error"
    UNAUTHORIZED = "authentication_error"
    FORBIDDEN = "permission_error"
    OVERLOADED = "overloaded_error"
    NOT_READY = "not_ready_error"
    TIMEOUT = "timeout_error"
    BACKEND = "backend_error"
    INTERNAL = "internal_error"


STATUS_BY_TYPE: dict[ErrorType, int] = {
    ErrorType.INVALID_REQUEST: 400,
    ErrorType.UNAUTHORIZED: 401,
    ErrorType.FORBIDDEN: 403,
    ErrorType.NOT_FOUND: 404,
    ErrorType.METHOD_NOT_ALLOWED: 405,
    ErrorType.PAYLOAD_TOO_LARGE: 413,
    ErrorType.VALIDATION: 422,
    ErrorType.INTERNAL: 500,
    ErrorType.BACKEND: 502,
    ErrorType.OVERLOADED: 503,
    ErrorType.NOT_READY: 503,
    ErrorType.TIMEOUT: 504,
}


class ServiceError(Exception):
    """An error with a type from the closed set; raised anywhere, rendered in one place."""

    def __init__(
        self,
        error_type: ErrorType,
        message: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}

    @property
    def status_code(self) -> int:
        return STATUS_BY_TYPE[self.error_type]


class Overloaded(ServiceError):
    """The admission queue is full: answer 503 with Retry-After at once."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(ErrorType.OVERLOADED, message, headers={"Retry-After": str(retry_after_s)})


class ErrorBody(BaseModel):
    message: str
    type: str
    code: int


class ErrorEnvelope(BaseModel):
    """The body of every error response."""

    error: ErrorBody


def envelope(error_type: ErrorType, message: str, code: int | None = None) -> dict[str, Any]:
    status = code if code is not None else STATUS_BY_TYPE[error_type]
    return {"error": {"message": message, "type": str(error_type), "code": status}}


def error_type_for_status(status: int) -> ErrorType:
    """Map a bare HTTP status (Starlette's own errors) into the closed set."""
    for error_type, code in STATUS_BY_TYPE.items():
        if code == status:
            return error_type
    return ErrorType.INVALID_REQUEST if 400 <= status < 500 else ErrorType.INTERNAL


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries: each declared status uses the envelope schema."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        error_type = error_type_for_status(status)
        out[status] = {
            "model": ErrorEnvelope,
            "description": error_type.value.replace("_", " "),
            "content": {
                "application/json": {"example": envelope(error_type, "example message", status)}
            },
        }
    return out
