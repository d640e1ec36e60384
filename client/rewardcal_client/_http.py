"""Retry policy and error mapping shared by the sync and async clients (sans I/O).

What is retried, and why only that:

- **503** (``overloaded_error``: the admission queue is full; ``not_ready_error``: the model
  is still loading). The service rejected the request before scoring it, so sending it
  again cannot score or observe anything twice. ``Retry-After`` is honoured.
- **Connection failures before a response**: ``ConnectError``, ``ConnectTimeout``,
  ``PoolTimeout`` (the request never left) and ``RemoteProtocolError`` (the server closed
  the connection without answering, typically a stale keep-alive connection or a restart).
- Nothing else. Other 4xx are the caller's mistake (bad input, bad key) and fail the same
  way every time; 500/502/504 and read timeouts may come *after* the batch was scored and
  observed, and a retry would add its samples to the calibration window twice.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from rewardcal_client.types import RewardConnectionError, RewardServiceError

DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
"""Read/write/pool 120 s (a big batch behind a busy queue), connect 5 s."""

RETRY_STATUSES = frozenset({503})

RETRY_TRANSPORT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, for 503 answers and connection failures only.

    The n-th retry (n = 0, 1, ...) waits ``min(backoff_max_s, backoff_base_s * 2**n)``
    scaled by a random factor in ``[1 - jitter, 1]``. When the answer carries
    ``Retry-After``, the wait is that value plus up to ``jitter * backoff_base_s`` (so that
    rejected clients do not all come back at the same instant), capped at
    ``backoff_max_s``. ``max_retries=0`` disables retries.
    """

    max_retries: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError("backoff_base_s and backoff_max_s must be >= 0")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be in [0, 1]")

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        if retry_after is not None:
            wait = retry_after + self.jitter * self.backoff_base_s * rng.random()
        else:
            ceiling = self.backoff_base_s * (2.0 ** min(retry, 62))
            wait = min(self.backoff_max_s, ceiling) * (1.0 - self.jitter * rng.random())
        return max(0.0, min(self.backoff_max_s, wait))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; ``None`` if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def new_request_id() -> str:
    """An ``X-Request-ID`` the service accepts and echoes; one per request, kept across
    its retries so that the server log shows every attempt under one id."""
    return f"rc-{uuid.uuid4().hex}"


def should_retry_status(status: int) -> bool:
    return status in RETRY_STATUSES


def should_retry_error(exc: httpx.TransportError) -> bool:
    return isinstance(exc, RETRY_TRANSPORT_ERRORS)


def error_from_response(
    response: httpx.Response, request_id: str, attempts: int
) -> RewardServiceError:
    """The typed error of a non-2xx answer, read from the service's error envelope."""
    error_type = "http_error"
    message = ""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        envelope = body["error"]
        error_type = str(envelope.get("type") or error_type)
        message = str(envelope.get("message") or "")
    elif isinstance(body, dict) and "detail" in body:  # a plain FastAPI/Starlette answer
        message = str(body["detail"])
    if not message:
        text = response.text.strip()
        message = text[:500] if text else (response.reason_phrase or "error")
    return RewardServiceError(
        message,
        status=response.status_code,
        type=error_type,
        request_id=response.headers.get("x-request-id") or request_id,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        attempts=attempts,
    )


def error_from_transport(
    exc: httpx.TransportError, request_id: str, attempts: int
) -> RewardConnectionError:
    kind = "timeout_error" if isinstance(exc, httpx.TimeoutException) else "connection_error"
    url = exc.request.url if _has_request(exc) else "the service"
    return RewardConnectionError(
        f"{type(exc).__name__} calling {url}: {exc}".rstrip(": "),
        type=kind,
        request_id=request_id,
        attempts=attempts,
    )


def decode_json(response: httpx.Response, request_id: str, attempts: int) -> Any:
    try:
        return response.json()
    except ValueError:
        raise RewardServiceError(
            f"the service answered {response.status_code} with a body that is not JSON",
            status=response.status_code,
            type="invalid_response",
            request_id=response.headers.get("x-request-id") or request_id,
            attempts=attempts,
        ) from None


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request  # noqa: B018 - raises RuntimeError when no request is attached
    except RuntimeError:
        return False
    return True
