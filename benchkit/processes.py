"""Server processes for benchmarks and the GPU check: start, readiness, CPU time, stop.

Every server runs in its own session, so that it and whatever it starts (uvicorn workers,
vLLM's engine core) form one process group: ``stop`` ends the whole group, also after a
failure, and ``stop_all`` ends every server still running when the script is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

_RUNNING: list[ServerProcess] = []


class ServerExited(RuntimeError):
    """The server ended while it was being waited for."""


class NotReady(TimeoutError):
    """The server did not answer its readiness route in time."""


class Unfinished(TimeoutError):
    """A job (a child that should exit by itself) still ran at its time limit."""


def free_port() -> int:
    """A port free on 127.0.0.1 now (the OS picks it; another process may take it later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_fields(pid: str | int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (None if the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, all its threads, not its children (vLLM's engine
    core is a child: this is the front end alone). 0 once the process is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process of a process group (threads included)."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is not None and len(fields) > 12 and int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class ServerProcess:
    """One child process in its own session / process group, its output in ``log_path``.

    Use as a context manager (started on entry, the group stopped on exit) or call
    ``start`` / ``stop``.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        label: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.label = label or Path(self.argv[0]).name
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.started_at = float("nan")

    def start(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.proc.pid  # also the process group id (new session)
        self.started_at = time.monotonic()
        _RUNNING.append(self)
        return self

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def wait_ready(self, url: str, timeout_s: float, *, in_a_row: int = 1) -> float:
        """Poll ``url`` until it answers 200 ``in_a_row`` times running, each on a fresh
        connection (several workers behind one port each load on their own); seconds since
        the start. Raises :class:`ServerExited` or :class:`NotReady` with the log's tail."""
        import httpx

        deadline = time.monotonic() + timeout_s
        streak = 0
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise ServerExited(
                    f"{self.label} exited with {code} while starting; log tail "
                    f"({self.log_path}):\n{self.log_tail()}"
                )
            try:
                ok = httpx.get(url, timeout=5).status_code == 200
            except httpx.HTTPError:
                ok = False
            streak = streak + 1 if ok else 0
            if streak >= in_a_row:
                return time.monotonic() - self.started_at
            if not ok:
                time.sleep(0.5)
        raise NotReady(
            f"{self.label}: {url} not ready after {timeout_s:.0f} s; log tail "
            f"({self.log_path}):\n{self.log_tail()}"
        )

    def wait(self, timeout_s: float) -> int:
        """Exit code of a child that runs to completion (a job, not a server); raises
        :class:`Unfinished` when it is still running after ``timeout_s``."""
        assert self.proc is not None, "not started"
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise Unfinished(
                f"{self.label} still running after {timeout_s:.0f} s; log tail "
                f"({self.log_path}):\n{self.log_tail()}"
            ) from None

    def cpu_seconds(self) -> float:
        """CPU time of the whole process group so far (live processes)."""
        return group_cpu_seconds(self.pid) if self.pid else 0.0

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM to the group, SIGKILL after ``grace_s``, then to any straggler (engine
        workers that outlive their parent)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait_s)
            if proc.poll() is not None and not _group_alive(self.pid):
                break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ValueError):
            _RUNNING.remove(self)


def stop_all() -> None:
    """Stop every server this process started and has not stopped yet."""
    for server in list(_RUNNING):
        server.stop()


def stop_all_on_signals(name: str) -> None:
    """SIGTERM and SIGINT stop every server, then exit with 128 + the signal."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        print(f"{name}: stopped by signal {signum}; stopping the servers", file=sys.stderr)
        stop_all()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
