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


def header_timeout_protocol(header_timeout_s: float, base: Any = None) -> type[asyncio.Protocol]:
    """An HTTP protocol class for ``uvicorn.Config(http=...)``."""
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
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_overdue)

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
                header_timeout_s,
            )
            self.transport.close()

    HeaderTimeoutProtocol.__name__ = f"HeaderTimeout{parent.__name__}"
    return HeaderTimeoutProtocol
