"""Calibration streams and the curve a request is calibrated with.

A request takes a ``CurveView`` when it arrives (the stream's current immutable curve) and
applies it to its raw rewards after scoring; its own observations go to the stream after.
The ``none`` method is a real method: reward = raw, bias = 0, status ``uncalibrated``.
"""

from __future__ import annotations

import enum
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from service.errors import ErrorType, ServiceError

DEFAULT_GROUP = "default"
_GROUP_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")


class CalibrationStatus(enum.StrEnum):
    UNCALIBRATED = "uncalibrated"
    WARMING_UP = "warming_up"
    REFERENCE = "reference"
    CALIBRATED = "calibrated"
    FROZEN = "frozen"


def validate_group(group: str | None) -> str:
    if group is None or group == "":
        return DEFAULT_GROUP
    if not _GROUP_PATTERN.match(group):
        raise ServiceError(
            ErrorType.VALIDATION,
            "calibration_group must be 1-64 characters of letters, digits, '_', '.', ':' "
            "or '-', starting with a letter or digit",
        )
    return group


@dataclass(frozen=True)
class CurveView:
    """The immutable curve one request is calibrated with."""

    group: str
    version: int
    status: CalibrationStatus
    method: str

    def apply(
        self, features: Sequence[Mapping[str, float]], raw: Sequence[float]
    ) -> tuple[list[float], list[float]]:
        """Calibrated rewards and the bias removed from each."""
        return list(raw), [0.0] * len(raw)


@dataclass
class _Stream:
    model: str
    group: str
    method: str
    observed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class CalibrationEngine:
    """Owns the streams. Only the ``none`` method exists until the LOWESS engine lands."""

    def __init__(self, method: str = "none") -> None:
        self._default_method = method
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._lock = threading.Lock()

    def _stream(self, model: str, group: str) -> _Stream:
        key = (model, group)
        with self._lock:
            stream = self._streams.get(key)
            if stream is None:
                stream = _Stream(model=model, group=group, method=self._default_method)
                self._streams[key] = stream
            return stream

    def current(self, model: str, group: str) -> CurveView:
        stream = self._stream(model, group)
        return CurveView(
            group=group, version=0, status=CalibrationStatus.UNCALIBRATED, method=stream.method
        )

    def observe(
        self,
        model: str,
        group: str,
        features: Sequence[Mapping[str, float]],
        raw: Sequence[float],
    ) -> None:
        stream = self._stream(model, group)
        with stream.lock:
            stream.observed += len(raw)

    def streams(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._streams)
