"""Cancel a route's work when its client disconnects.

Starlette does not cancel an endpoint whose client went away, so a trainer that timed out
would still hold a place in the batch queue. As in vLLM's ``with_cancellation``, the
handler races a listener for ``http.disconnect``; when the client leaves first the handler
task is cancelled, which cancels its queued inputs before inference. ``request.is_disconnected``
is not used: it only peeks and would have to be polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from fastapi import Request
from starlette.responses import Response

CLIENT_CLOSED = 499
"""nginx's status for a request whose client closed the connection before the answer."""

P = ParamSpec("P")
T = TypeVar("T")


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def with_cancellation(
    handler: Callable[P, Awaitable[T]],
) -> Callable[P, Awaitable[T | Response]]:
    """Decorate an endpoint taking ``raw_request: Request`` (after its body was read).

    When the client leaves first, the work is cancelled and the endpoint returns a bare
    499 response (nobody reads it; the access log and metrics record client-closed, not
    a server error)."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T | Response:
        request: Any = kwargs.get("raw_request")
        if not isinstance(request, Request):
            return await handler(*args, **kwargs)
        work = asyncio.ensure_future(handler(*args, **kwargs))
        watcher = asyncio.ensure_future(_wait_for_disconnect(request))
        try:
            done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            watcher.cancel()
            raise
        watcher.cancel()
        if work in done:
            return work.result()
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        return Response(status_code=CLIENT_CLOSED)  # nobody is listening

    return wrapper
