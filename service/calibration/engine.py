"""The calibration engine: streams keyed by (model, group), background refits, snapshots.

Requests call ``current`` on arrival and ``record`` after scoring; neither fits anything.
A background task refits streams that are due (every N new samples or T seconds) in a
worker thread, publishes each fit as a new immutable curve version, updates the drift
metrics, and writes snapshots on an interval and at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence

from service.calibration.config import StreamConfig
from service.calibration.curve import Curve, curve_drift, fit_curve
from service.calibration.persistence import SnapshotStore, StreamSnapshot
from service.calibration.stream import CalibrationStream, CurveView
from service.errors import ErrorType, ServiceError
from service.metrics import CalibrationMetrics

logger = logging.getLogger(__name__)

DEFAULT_GROUP = "default"
_GROUP_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")


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


class CalibrationEngine:
    def __init__(
        self,
        defaults: StreamConfig,
        *,
        max_groups: int = 64,
        store: SnapshotStore | None = None,
        metrics: CalibrationMetrics | None = None,
        snapshot_interval_s: float = 30.0,
        poll_interval_s: float = 0.2,
    ) -> None:
        self.defaults = defaults
        self.max_groups = max_groups
        self._store = store
        self._metrics = metrics
        self._snapshot_interval_s = snapshot_interval_s
        self._poll_interval_s = poll_interval_s
        self._streams: dict[tuple[str, str], CalibrationStream] = {}
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._last_snapshot = time.monotonic()

    # ---- streams ---------------------------------------------------------------------------

    def stream(self, model: str, group: str, *, create: bool = True) -> CalibrationStream:
        key = (model, group)
        with self._lock:
            stream = self._streams.get(key)
            if stream is not None:
                return stream
            if not create:
                raise ServiceError(
                    ErrorType.NOT_FOUND, f"no calibration stream {group!r} for model {model!r}"
                )
            if len(self._streams) >= self.max_groups:
                raise ServiceError(
                    ErrorType.INVALID_REQUEST,
                    f"too many calibration groups (limit {self.max_groups}); reuse or reset "
                    "one, or raise calibration_max_groups",
                )
            stream = CalibrationStream(model, group, self.defaults)
            self._streams[key] = stream
            return stream

    def streams(self) -> list[CalibrationStream]:
        with self._lock:
            return [self._streams[key] for key in sorted(self._streams)]

    def current(self, model: str, group: str) -> CurveView:
        return self.stream(model, group).view()

    def record(
        self,
        model: str,
        group: str,
        features: Sequence[Mapping[str, float]],
        raw: Sequence[float],
        calibrated: Sequence[float],
        *,
        observe: bool,
    ) -> None:
        """After scoring: metrics for all traffic, window observations unless opted out."""
        stream = self.stream(model, group)
        if observe:
            stream.observe(features, raw)
        if self._metrics is not None:
            self._metrics.observed(model, group, features, raw, calibrated)
            self._metrics.window(model, group, stream.window_samples)

    # ---- fitting ---------------------------------------------------------------------------

    def fit_now(self, stream: CalibrationStream) -> Curve | None:
        """Fit the stream's window and publish the curve (blocking; worker thread)."""
        with stream.fit_lock:
            return self._fit_locked(stream)

    def _fit_locked(self, stream: CalibrationStream) -> Curve | None:
        job = stream.take_fit_job()
        if job is None:
            return None
        started = time.perf_counter()
        try:
            fitted = fit_curve(job.config, job.features, job.raw, version=0)
        except Exception:
            logger.exception("refit of stream %s/%s failed", stream.model, stream.group)
            stream.abandon(job)
            return None
        curve = stream.install(job, lambda version: _with_version(fitted, version))
        elapsed = time.perf_counter() - started
        if curve is not None:
            logger.info(
                "stream %s/%s: curve v%d on %d samples in %.3f s (spearman raw %s -> %s)",
                stream.model,
                stream.group,
                curve.version,
                curve.stats.samples,
                elapsed,
                _fmt(curve.stats.spearman_raw),
                _fmt(curve.stats.spearman_calibrated),
            )
            if self._metrics is not None:
                self._metrics.refit(
                    stream.model,
                    stream.group,
                    curve,
                    curve_drift(stream.previous_curve, curve),
                    elapsed,
                )
        return curve

    def refit_due(self) -> int:
        """Fit every stream that is due now; returns how many were refitted."""
        now = time.monotonic()
        fitted = 0
        for stream in self.streams():
            if stream.due(now) and self.fit_now(stream) is not None:
                fitted += 1
        return fitted

    # ---- snapshots -------------------------------------------------------------------------

    def snapshot(self, *, only_dirty: bool = True) -> int:
        if self._store is None:
            return 0
        written = 0
        for stream in self.streams():
            if only_dirty and not stream.dirty:
                continue
            meta, (features, raw) = stream.export_state(include_window=True)
            try:
                self._store.save(StreamSnapshot(meta, features, raw))
                written += 1
            except OSError as exc:
                stream.dirty = True
                logger.warning(
                    "could not write snapshot of %s/%s: %s", stream.model, stream.group, exc
                )
        self._last_snapshot = time.monotonic()
        return written

    def restore(self) -> int:
        if self._store is None:
            return 0
        restored = 0
        for snap in self._store.load_all():
            try:
                model, group = str(snap.meta["model"]), str(snap.meta["group"])
                stream = self.stream(model, group)
                stream.restore_state(snap.meta, snap.features, snap.raw)
            except (KeyError, ValueError, ServiceError) as exc:
                logger.warning("skipping calibration snapshot: %s", exc)
                continue
            restored += 1
            if self._metrics is not None:
                view = stream.view()
                self._metrics.restored(model, group, view.version, stream.window_samples)
        if restored:
            logger.info("restored %d calibration stream(s) from snapshots", restored)
        return restored

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.restore)
        if self._task is None:
            self._task = asyncio.create_task(self._background(), name="rewardcal-refit")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.snapshot)

    async def _background(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                await asyncio.to_thread(self.refit_due)
                if time.monotonic() - self._last_snapshot >= self._snapshot_interval_s:
                    await asyncio.to_thread(self.snapshot)
            except Exception:  # noqa: BLE001 - the background task must survive anything
                logger.exception("calibration background step failed")


def _with_version(curve: Curve, version: int) -> Curve:
    return Curve(version, curve.method, curve.components, curve.post, curve.stats, curve.fitted_at)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"
