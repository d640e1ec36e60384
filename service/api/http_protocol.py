"""uvicorn's HTTP protocol with a deadline for request headers (slow clients).

uvicorn closes idle keep-alive connections, but a client that sends part of its headers
and then trickles a byte now and then holds its connection (and a file descriptor)
forever: every byte cancels the keep-alive timer. Like nginx's ``client_header_timeout``,
a connection that has not completed a request's headers within ``header_timeout_s`` of
connecting (or of its previous response) is closed here. A request in progress (headers
complete, response not yet sent) is never cut.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

logger = logging.getLogger(__name__)


def _base_protocol() -> type[asyncio.Protocol]:
    # The protocol uvicorn's "auto" picks: httptools when installed, else h11.
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
    return HttpToolsProtocol


def header_timeout_protocol(
    header_timeout_s: float | None, base: Any = None
) -> type[asyncio.Protocol]:
    """An HTTP protocol class for ``uvicorn.Config(http=...)``; ``None`` reads the timeout
    from ``REWARDCAL_HEADER_TIMEOUT_S`` (worker processes get their settings that way)."""
    parent: Any = base if base is not None else _base_protocol()

    class HeaderTimeoutProtocol(parent):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()  # the next request's headers are due in time too

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._disarm_header_timer()
            self._header_timer = self.loop.call_later(_timeout(), self._headers_overdue)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_overdue(self) -> None:
            self._header_timer = None
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                return  # a request is being served: its headers did arrive
            if self.transport.is_closing():
                return
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "?"
            logger.info(
                "closing connection from %s: no complete request headers within %g s "
                "(header_timeout_s)",
                client,
                _timeout(),
            )
            self.transport.close()

    def _timeout() -> float:
        if header_timeout_s is not None:
            return header_timeout_s
        return float(os.environ.get("REWARDCAL_HEADER_TIMEOUT_S", "10"))

    HeaderTimeoutProtocol.__name__ = f"HeaderTimeout{parent.__name__}"
    return HeaderTimeoutProtocol


# For ``workers`` > 1: uvicorn pickles its config into each worker process, so the class
# must be importable by name.
WorkerHTTPProtocol = header_timeout_protocol(None)
WorkerHTTPProtocol.__qualname__ = WorkerHTTPProtocol.__name__ = "WorkerHTTPProtocol"
