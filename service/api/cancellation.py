"""Cancel a route's work when its client disconnects.

Starlette does not cancel an endpoint whose client went away, so a trainer that timed out
would still hold a place in the batch queue. As in vLLM's ``with_cancellation``, the
handler races a listener for ``http.disconnect``; when the client leaves first the handler
task is cancelled, which cancels its queued inputs before inference. ``request.is_disconnected``
is not used: it only peeks and would have to be polled.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from fastapi import Request
from starlette.responses import Response
from starlette.types import Receive

CLIENT_CLOSED = 499
"""nginx's status for a request whose client closed the connection before the answer."""

P = ParamSpec("P")
T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before its answer; its work was cancelled."""


async def cancel_on_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work`` in the current task, cancelling it if the client disconnects first
    (then ``ClientGone``). Call it once the body was read: the watcher takes every later
    message, and the only one that can come is ``http.disconnect``."""
    current = asyncio.current_task()
    if current is None:  # not in a task (nothing to cancel)
        return await work
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        current.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        current.uncancel()
        raise ClientGone from None
    finally:
        # No await between the work's end and here: the watcher cannot cancel a request
        # that already has its answer.
        watcher.cancel()


def with_cancellation(
    handler: Callable[P, Awaitable[T]],
) -> Callable[P, Awaitable[T | Response]]:
    """Decorate an endpoint taking ``raw_request: Request`` (after its body was read).

    The handler runs in the request's own task; one watcher task listens for the
    disconnect and cancels it (the only task a request spawns). When the client leaves
    first, the endpoint returns a bare 499 response (nobody reads it; the access log and
    metrics record client-closed, not a server error)."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T | Response:
        request: Any = kwargs.get("raw_request")
        if not isinstance(request, Request):
            return await handler(*args, **kwargs)
        try:
            return await cancel_on_disconnect(request.receive, handler(*args, **kwargs))
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED)  # nobody is listening

    return wrapper
