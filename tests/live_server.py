"""A real uvicorn server in a thread, on 127.0.0.1, for tests of HTTP-level behaviour
(keep-alive, disconnects, slow headers) that an in-process TestClient cannot show."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from rewardcal.api import create_app
from rewardcal.api.http_protocol import header_timeout_protocol
from rewardcal.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_server(
    model_path: Path, backend: Any, *, protocol_base: Any = None, **overrides: Any
) -> Iterator[tuple[str, Any]]:
    """Yield (base URL, app); the server is stopped on exit."""
    port = free_port()
    settings = Settings(host="127.0.0.1", port=port, **overrides)
    app = create_app(
        settings,
        model_path,
        backend=backend,
        registry=CollectorRegistry(),
        artifacts=getattr(backend, "artifacts", None),
    )
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="info",
        lifespan="on",
        access_log=False,
        http=header_timeout_protocol(settings.header_timeout_s, base=protocol_base),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not (
        server.started and app.state.runtime is not None and app.state.runtime.ready.is_set()
    ):
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield base, app
    finally:
        server.should_exit = True
        thread.join(15)


def raw_request(path: str, body: bytes, *, keep_alive: bool = True) -> bytes:
    connection = b"keep-alive" if keep_alive else b"close"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + b"Connection: "
        + connection
        + b"\r\n\r\n"
        + body
    )


def read_response(sock: socket.socket, timeout_s: float = 30.0) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response with a Content-Length; (status, body)."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed mid-body")
        rest += chunk
    return status, rest[:length]
