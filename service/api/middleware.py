"""ASGI middleware: request ids, body size limit, request metrics.

Written as plain ASGI (not BaseHTTPMiddleware) so that streaming, cancellation on client
disconnect and the body limit work on the raw message flow.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time
from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rewardcal.api.cancellation import CLIENT_CLOSED
from rewardcal.errors import ErrorType, envelope
from rewardcal.log_context import request_id_var
from rewardcal.metrics import ServingMetrics

logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
_ID_PREFIX = os.urandom(8).hex()  # per process: ids stay unique across workers
_ID_COUNTER = itertools.count()


def new_request_id() -> str:
    """32 hex digits like ``uuid4().hex``, at a fraction of its cost (no urandom call per
    request): a random per-process prefix and a counter."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFFFFFFFFFF:016x}"


class _BodyTooLarge(StarletteHTTPException):
    """Raised from receive(); an HTTPException so FastAPI's body parsing passes it on and
    the envelope handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


async def _send_error(send: Send, error_type: ErrorType, message: str, request_id: str) -> None:
    body = json.dumps(envelope(error_type, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": envelope(error_type, message)["error"]["code"],
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    """Assigns X-Request-ID, enforces the body limit, records request metrics."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, metrics_getter: Any) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._metrics_getter = metrics_getter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}

        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(send, request_id)
            self._record(scope, 413, started)
            return

        received = 0
        disconnected = False

        async def limited_receive() -> Message:
            nonlocal received, disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            elif message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge(self.max_body_bytes)
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (b"x-request-id", request_id.encode())
                ]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            if not status_holder["started"]:
                await self._too_large(send, request_id)
            status_holder["status"] = 413
        except ClientDisconnect:
            # The client left while its body was being read: nothing to answer, no error.
            status_holder["status"] = CLIENT_CLOSED
        finally:
            status = int(status_holder["status"])
            if disconnected and status >= 400:
                # The client left before its answer (e.g. mid-body, which FastAPI reports
                # as a 400 body error nobody receives): that is 499, not a bad request.
                status = CLIENT_CLOSED
            if status == CLIENT_CLOSED:
                logger.info(
                    "%s %s %d client closed the connection before the answer",
                    scope.get("method", "?"),
                    scope.get("path", "?"),
                    CLIENT_CLOSED,
                )
            self._record(scope, status, started)
            request_id_var.reset(token)

    async def _too_large(self, send: Send, request_id: str) -> None:
        await _send_error(
            send,
            ErrorType.PAYLOAD_TOO_LARGE,
            f"request body exceeds {self.max_body_bytes} bytes",
            request_id,
        )

    def _record(self, scope: Scope, status: int, started: float) -> None:
        metrics: ServingMetrics | None = self._metrics_getter()
        if metrics is None:
            return
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        metrics.request(path, status, time.perf_counter() - started)
        if status >= 400 and status != CLIENT_CLOSED:
            from rewardcal.errors import error_type_for_status

            typed = (scope.get("state") or {}).get("error_type")
            metrics.error(typed or error_type_for_status(status).value)
