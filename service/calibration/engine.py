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

import numpy as np

from rewardcal.calibration.config import StreamConfig
from rewardcal.calibration.curve import Curve, fit_curve
from rewardcal.calibration.models import GROUP_PATTERN, StreamStateModel
from rewardcal.calibration.persistence import SnapshotStore, StreamSnapshot
from rewardcal.calibration.stream import CalibrationStatus, CalibrationStream, CurveView
from rewardcal.calibration.window import Array
from rewardcal.errors import ErrorType, ServiceError
from rewardcal.features import FEATURE_NAMES
from rewardcal.metrics import CalibrationMetrics

logger = logging.getLogger(__name__)

DEFAULT_GROUP = "default"
_GROUP_PATTERN = re.compile(GROUP_PATTERN)


def validate_group(group: str | None) -> str:
    if group is None or group == "":
        return DEFAULT_GROUP
    if not _GROUP_PATTERN.fullmatch(group):
        raise ServiceError(
            ErrorType.VALIDATION,
            "calibration_group must be 1-64 characters of letters, digits, '_', '.', ':' "
            "or '-', starting with a letter or digit",
        )
    return group


MAX_REFIT_PAUSE_S = 10.0
"""The longest the refit budget holds refits back (a process's first fit also compiles
the LOWESS kernels: seconds of CPU once, not a refit's cost)."""


class RefitBudget:
    """Background refits use at most ``share`` of one core, across all streams.

    Without it the cadence is set by traffic alone: at 1,000 observations/s and
    ``refit_every`` 256, a 16k-sample auto-span refit (50-100 ms of CPU) would run several
    times a second, each on a window that moved by 2%, and take a third of a core from the
    request path (bench/frontend.py). With it a refit that used t seconds of CPU is followed
    by a pause of t/share - t (at most ``MAX_REFIT_PAUSE_S``); small windows, whose fits take
    milliseconds, keep the configured cadence."""

    def __init__(self, share: float) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"refit CPU share must be in (0, 1], got {share}")
        self.share = share
        self._resume_at = 0.0

    def ready(self, now: float) -> bool:
        return now >= self._resume_at

    def spent(self, cpu_seconds: float, now: float) -> None:
        pause = min(cpu_seconds * (1.0 / self.share - 1.0), MAX_REFIT_PAUSE_S)
        self._resume_at = max(self._resume_at, now + pause)


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
        idle_ttl_s: float = 0.0,
        refit_cpu_share: float = 1.0,
        served_models: Sequence[str] | None = None,
    ) -> None:
        """``refit_cpu_share``: see :class:`RefitBudget` (1.0: refits as often as due)."""
        self.defaults = defaults
        self.max_groups = max_groups
        self.idle_ttl_s = idle_ttl_s
        # Snapshots of other models (the server was restarted under another name) are not
        # loaded and do not count against the limit; they are listed for deletion.
        self._served = set(served_models) if served_models is not None else None
        self.unserved: dict[tuple[str, str], str] = {}
        self._store = store
        self._metrics = metrics
        self._snapshot_interval_s = snapshot_interval_s
        self._poll_interval_s = poll_interval_s
        self.refit_budget = RefitBudget(refit_cpu_share)
        self._streams: dict[tuple[str, str], CalibrationStream] = {}
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._last_snapshot = time.monotonic()

    # ---- streams ---------------------------------------------------------------------------

    def stream(self, model: str, group: str, *, create: bool = True) -> CalibrationStream:
        key = (model, group)
        with self._lock:
            stream = self._streams.get(key)
            if stream is None and not create:
                raise ServiceError(
                    ErrorType.NOT_FOUND, f"no calibration stream {group!r} for model {model!r}"
                )
            if stream is None or (create and not stream.holds_state):
                self._check_capacity(key)
            if stream is None:
                stream = CalibrationStream(model, group, self.defaults)
                self._streams[key] = stream
            return stream

    def _check_capacity(self, key: tuple[str, str]) -> None:
        """Refuse a new (or emptied) stream when the limit's streams all hold state."""
        active = sum(
            1 for other, stream in self._streams.items() if other != key and stream.holds_state
        )
        if active >= self.max_groups:
            raise ServiceError(
                ErrorType.INVALID_REQUEST,
                f"too many calibration groups (limit {self.max_groups}); an operator can "
                "delete or reset one, idle groups are evicted, or raise "
                "calibration_max_groups",
            )

    def find(self, model: str, group: str) -> CalibrationStream | None:
        with self._lock:
            return self._streams.get((model, group))

    def streams(self) -> list[CalibrationStream]:
        with self._lock:
            return [self._streams[key] for key in sorted(self._streams)]

    @property
    def active_groups(self) -> int:
        return sum(1 for stream in self.streams() if stream.holds_state)

    def current(self, model: str, group: str, *, create: bool = True) -> CurveView:
        """The curve a request is calibrated with. ``create=False`` (evaluation traffic)
        never creates a stream: an unknown group is scored raw, status unknown_group."""
        if create:
            stream = self.stream(model, group)
        else:
            found = self.find(model, group)
            if found is None:
                return CurveView(group, 0, CalibrationStatus.UNKNOWN_GROUP, self.defaults.method)
            stream = found
        stream.touch()
        return stream.view()

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
        """After scoring: metrics for all traffic, window observations unless opted out.

        Traffic on a group that has no stream (observe: false) leaves no metric series
        either: label values come only from streams, which the group limit bounds."""
        stream = self.stream(model, group) if observe else self.find(model, group)
        if stream is None:
            return
        if observe:
            stream.observe(features, raw)
        if self._metrics is not None:
            self._metrics.observed(model, group, features, raw, calibrated)
            self._metrics.window(model, group, stream.window_samples)

    def delete(self, model: str, group: str) -> bool:
        """Forget a stream: its window, curves, snapshot and metric series. True if there
        was anything to delete (a loaded stream or an unserved model's snapshot)."""
        with self._lock:
            stream = self._streams.pop((model, group), None)
            unserved = self.unserved.pop((model, group), None)
        removed = self._store.delete(model, group) if self._store is not None else False
        if self._metrics is not None:
            self._metrics.forget(model, group)
        self._report_groups()
        return stream is not None or unserved is not None or removed

    def evict_idle(self, now: float | None = None) -> list[str]:
        """Delete streams unused (no scoring request, no operator call) for ``idle_ttl_s``."""
        if self.idle_ttl_s <= 0:
            return []
        now = time.time() if now is None else now
        evicted = []
        for stream in self.streams():
            idle = now - stream.last_used_at
            if idle >= self.idle_ttl_s and not stream.fit_lock.locked():
                self.delete(stream.model, stream.group)
                evicted.append(stream.group)
                logger.info(
                    "evicted calibration group %s/%s: idle for %.0f s (calibration_idle_ttl_s)",
                    stream.model,
                    stream.group,
                    idle,
                )
        return evicted

    def _report_groups(self) -> None:
        if self._metrics is not None:
            self._metrics.groups(self.active_groups, self.max_groups)

    # ---- operator API (what routes call; the shared store implements the same) ----------

    async def ensure(self, model: str, group: str) -> None:
        """Before observed scoring: the group exists or is created (400 at the limit)."""
        self.stream(model, group)

    async def get(self, model: str, group: str) -> CalibrationStream:
        """An existing stream (404 otherwise), marked as used."""
        stream = self.stream(model, group, create=False)
        stream.touch()
        return stream

    async def freeze(self, model: str, group: str) -> CalibrationStream:
        stream = self.stream(model, group)  # freezing a new name pins it to raw rewards
        stream.touch()
        stream.freeze()
        return stream

    async def unfreeze(self, model: str, group: str) -> CalibrationStream:
        stream = await self.get(model, group)
        stream.unfreeze()
        return stream

    async def reset(self, model: str, group: str) -> CalibrationStream:
        stream = await self.get(model, group)
        stream.reset()
        self._report_groups()
        return stream

    async def refit(self, model: str, group: str) -> CalibrationStream:
        stream = await self.get(model, group)
        check_refit(stream.frozen, stream.window_samples, stream.config)
        await asyncio.to_thread(self.fit_now, stream)
        return stream

    async def import_curve(
        self, model: str, group: str, curve: Curve, config: StreamConfig | None, freeze: bool
    ) -> CalibrationStream:
        stream = self.stream(model, group)
        stream.touch()
        stream.load_reference(curve, config, freeze)
        self._report_groups()
        return stream

    async def remove(self, model: str, group: str) -> bool:
        return await asyncio.to_thread(self.delete, model, group)

    async def window(self, model: str, group: str) -> tuple[Array, Array]:
        return (await self.get(model, group)).window_arrays()

    @property
    def store_name(self) -> str:
        return "memory"

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
        curve = stream.install(job, fitted)
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
                self._metrics.refit(stream.model, stream.group, curve, curve.stats.drift, elapsed)
        return curve

    def warm_up(self) -> None:
        """Fit a small synthetic window with the default config, so that what a first refit
        loads (the compiled LOWESS kernels: ~0.5 s from numba's cache, seconds on a first
        run) is loaded now, off the request path and before a server freezes its heap."""
        config = self.defaults
        if config.method == "none":
            return
        rng = np.random.default_rng(0)
        n = max(config.min_samples, 64)
        features = np.zeros((n, len(FEATURE_NAMES)))
        features[:] = rng.integers(1, 2000, size=(n, 1))
        fit_curve(config, features, features[:, 0] * 1e-3 + rng.normal(size=n), version=0)

    def refit_due(self) -> int:
        """Fit the streams that are due now, the longest unfitted first, while the refit
        budget allows; returns how many were refitted."""
        fitted = 0
        for stream in sorted(self.streams(), key=lambda s: s.last_fit_at):
            now = time.monotonic()
            if not self.refit_budget.ready(now):
                break
            if not stream.due(now):
                continue
            cpu = time.thread_time()  # the fit runs in this thread (the kernels too)
            if self.fit_now(stream) is not None:
                fitted += 1
            self.refit_budget.spent(time.thread_time() - cpu, time.monotonic())
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
                if self.find(stream.model, stream.group) is not stream:
                    # Deleted or evicted while this snapshot was written: do not let the
                    # file bring it back at the next start.
                    self._store.delete(stream.model, stream.group)
            except OSError as exc:
                stream.dirty = True
                logger.warning(
                    "could not write snapshot of %s/%s: %s", stream.model, stream.group, exc
                )
        self._last_snapshot = time.monotonic()
        return written

    def restore(self) -> int:
        """Load every snapshot of a served model that validates; skip the others with a
        warning naming the file (a bad snapshot never keeps the service from starting)."""
        if self._store is None:
            return 0
        restored = 0
        for snap in self._store.load_all():
            try:
                state = StreamStateModel.model_validate(snap.meta)
            except ValueError as exc:
                logger.warning(
                    "skipping calibration snapshot %s: it does not validate: %s",
                    snap.source or "?",
                    _one_line(exc),
                )
                continue
            if self._served is not None and state.model not in self._served:
                self.unserved[(state.model, state.group)] = snap.source
                continue
            try:
                stream = self.stream(state.model, state.group)
                stream.restore_state(state, snap.features, snap.raw)
            except (ValueError, ServiceError) as exc:
                with self._lock:
                    self._streams.pop((state.model, state.group), None)
                logger.warning(
                    "skipping calibration snapshot %s: %s", snap.source or "?", _one_line(exc)
                )
                continue
            restored += 1
            if self._metrics is not None:
                view = stream.view()
                self._metrics.restored(
                    state.model, state.group, view.version, stream.window_samples
                )
        if restored:
            logger.info("restored %d calibration stream(s) from snapshots", restored)
        if self.unserved:
            logger.warning(
                "%d calibration snapshot(s) belong to models this server does not serve (%s); "
                "they are not loaded: list them with GET /v1/calibration, delete them with "
                "DELETE /v1/calibration/{group}?model=...",
                len(self.unserved),
                ", ".join(sorted({model for model, _ in self.unserved})),
            )
        self._report_groups()
        return restored

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.restore)
        except Exception:  # noqa: BLE001 - old state must never keep the model from serving
            logger.exception("calibration snapshots could not be restored; starting without")
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
                self.evict_idle()
                self._report_groups()
                if time.monotonic() - self._last_snapshot >= self._snapshot_interval_s:
                    await asyncio.to_thread(self.snapshot)
            except Exception:  # noqa: BLE001 - the background task must survive anything
                logger.exception("calibration background step failed")


def check_refit(frozen: bool, samples: int, config: StreamConfig) -> None:
    if frozen:
        raise ServiceError(ErrorType.INVALID_REQUEST, "the stream is frozen; unfreeze it first")
    if samples < config.min_samples:
        raise ServiceError(
            ErrorType.INVALID_REQUEST,
            f"{samples} samples in the window; a fit needs {config.min_samples}",
        )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]
