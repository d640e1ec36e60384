"""The scoring routes' request path, in plain ASGI.

Every request of a training loop is a POST to one of five paths. FastAPI declares them
(OpenAPI, /docs) and serves every other route; a POST to one of these exact paths is served
here, before FastAPI's router, in the same order of steps as FastAPI's dependencies:

    key (401) -> runtime ready (503) -> group header (422) -> body: one
    ``model_validate_json`` -> the route's ``*_answer`` (cancelled if the client leaves:
    499) -> its JSON bytes.

What it leaves out is FastAPI's general machinery, which was about half of the front end's
CPU per one-sample request (bench/frontend.py): the router's regex scan, the dependency
solver and its header lookups, per-request exit stacks, parsing the body to Python objects
with ``json.loads`` before validating them, and three exception-handling layers.

One order differs, on purpose: the key is checked before the body is read (FastAPI parses
the JSON first, so a keyless request with broken JSON got 400; here it gets 401).

Otherwise behaviour is FastAPI's, answer for answer: a body that does not validate is
parsed again the way FastAPI parses it (``json.loads``, then the model) so that every error
keeps the message and status it had, through the same envelope code
(tests/test_scoring_asgi.py compares both paths on good and bad requests). The
request-context middleware (request id, body limit, metrics) wraps both paths.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from rewardcal.api.cancellation import CLIENT_CLOSED, ClientGone, cancel_on_disconnect
from rewardcal.api.deps import GROUP_HEADER_MAX_LENGTH, check_api_key, ready_runtime, settings_of
from rewardcal.api.error_handlers import describe_validation, error_response
from rewardcal.api.routes import native, openrlhf, vllm_compat
from rewardcal.errors import ErrorType, ServiceError
from rewardcal.runtime import Runtime
from rewardcal_client.protocol.native import CompareRequest, RewardsRequest
from rewardcal_client.protocol.openrlhf import GetRewardRequest
from rewardcal_client.protocol.vllm_compat import ClassifyRequest

logger = logging.getLogger(__name__)

Answer = Callable[[Any, Runtime, str | None], Awaitable[Response]]


@dataclass(frozen=True)
class ScoringEndpoint:
    request: type[BaseModel]
    answer: Answer


SCORING_ENDPOINTS: dict[str, ScoringEndpoint] = {
    "/v1/rewards": ScoringEndpoint(RewardsRequest, native.rewards_answer),
    "/v1/rewards/compare": ScoringEndpoint(CompareRequest, native.compare_answer),
    "/get_reward": ScoringEndpoint(GetRewardRequest, openrlhf.get_reward_answer),
    "/classify": ScoringEndpoint(ClassifyRequest, vllm_compat.classify_answer),
    "/pooling": ScoringEndpoint(ClassifyRequest, vllm_compat.pooling_answer),
}


class _Invalid(Exception):
    """Request validation failed; ``errors`` as FastAPI reports them (locations included)."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("invalid request")
        self.errors = errors


class ScoringFastPath:
    """Routes a POST to a scoring path to :meth:`serve` (wrapped in ``wrap``, the
    request-context middleware); everything else to ``stack`` (FastAPI's own)."""

    def __init__(self, app: FastAPI, stack: ASGIApp, wrap: Callable[[ASGIApp], ASGIApp]) -> None:
        self._app = app
        self._stack = stack
        routes = {
            route.path: route
            for route in app.routes
            if isinstance(route, APIRoute) and "POST" in route.methods
        }
        # The declared route of each path: request metrics are labelled with its path.
        self._routes = {
            path: (endpoint, routes[path])
            for path, endpoint in SCORING_ENDPOINTS.items()
            if path in routes
        }
        self._serve_wrapped = wrap(self.serve)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in self._routes
            and not scope.get("root_path")
        ):
            await self._serve_wrapped(scope, receive, send)
        else:
            await self._stack(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint, route = self._routes[scope["path"]]
        scope["route"] = route
        try:
            response = await self._answer(endpoint, scope, receive)
        except ServiceError as exc:
            # errors_total is counted by this type (a 503 may be overload or not ready).
            scope.setdefault("state", {})["error_type"] = str(exc.error_type)
            response = error_response(exc.error_type, exc.message, headers=exc.headers)
        except _Invalid as exc:
            response = error_response(*describe_validation(exc.errors))
        except ClientGone:
            response = Response(status_code=CLIENT_CLOSED)  # nobody is listening
        except (ClientDisconnect, StarletteHTTPException):
            raise  # the request-context middleware answers these (499, 413)
        except Exception as exc:  # noqa: BLE001 - the trace to the log, not to the client
            logger.error("unhandled error on POST %s", scope["path"], exc_info=exc)
            response = error_response(ErrorType.INTERNAL, "internal server error")
        await response(scope, receive, send)

    async def _answer(self, endpoint: ScoringEndpoint, scope: Scope, receive: Receive) -> Response:
        authorization = group = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"x-calibration-group" and group is None:
                group = value.decode("latin-1")
        state = self._app.state
        check_api_key(authorization, settings_of(state))
        runtime = ready_runtime(getattr(state, "runtime", None))
        body = await _read_body(receive)
        errors = []
        if group is not None and len(group) > GROUP_HEADER_MAX_LENGTH:
            errors.append(_group_too_long(group))
        try:
            parsed = endpoint.request.model_validate_json(body) if body else None
        except ValidationError:
            parsed = None
        if parsed is None:
            parsed, body_errors = _parse_as_fastapi(endpoint.request, body)
            errors.extend(body_errors)
        if errors:
            raise _Invalid(errors)
        return await cancel_on_disconnect(receive, endpoint.answer(parsed, runtime, group))


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _group_too_long(value: str) -> dict[str, Any]:
    return {
        "type": "string_too_long",
        "loc": ("header", "x-calibration-group"),
        "msg": f"String should have at most {GROUP_HEADER_MAX_LENGTH} characters",
        "input": value,
    }


def _parse_as_fastapi(
    model: type[BaseModel], body: bytes
) -> tuple[BaseModel | None, list[dict[str, Any]]]:
    """The body parsed as FastAPI parses it, with the errors FastAPI reports: JSON through
    ``json.loads`` (so an escape pydantic's own parser refuses still reaches the model's
    checks, and their message), then the model; locations start with ``body``."""
    if not body:
        return None, [{"type": "missing", "loc": ("body",), "msg": "Field required"}]
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error"}
        return None, [error]
    except ValueError:  # not UTF-8/16/32 at all
        raise ServiceError(
            ErrorType.INVALID_REQUEST, "There was an error parsing the body"
        ) from None
    try:
        # from_attributes as FastAPI validates (its messages say so)
        return model.model_validate(value, from_attributes=True), []
    except ValidationError as exc:
        return None, [dict(error, loc=("body", *error["loc"])) for error in exc.errors()]
