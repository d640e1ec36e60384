"""One calibration stream: a (model, group) window, its curves, and their versions.

The request path only reads the current curve (an immutable object swapped under a
lock) and appends observations; fitting happens elsewhere (``CalibrationEngine``) on a
copy of the window, and the result is installed only if the stream was not reset since.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewardcal.calibration.config import StreamConfig
from rewardcal.calibration.curve import Curve, features_matrix
from rewardcal.calibration.models import StreamStateModel
from rewardcal.calibration.window import Array, RollingWindow
from rewardcal.features import FEATURE_NAMES


class CalibrationStatus(enum.StrEnum):
    UNCALIBRATED = "uncalibrated"  # method none
    WARMING_UP = "warming_up"  # fewer than min_samples and no reference: reward = raw
    REFERENCE = "reference"  # a loaded reference curve, before the stream's own fit
    CALIBRATED = "calibrated"
    FROZEN = "frozen"  # no refits; the frozen curve (or raw) is applied
    UNKNOWN_GROUP = "unknown_group"  # observe: false on a group that does not exist: raw
    STALE = "stale"  # the shared store is unreachable: the last known curve still applies


@dataclass(frozen=True)
class CurveView:
    """What one request is calibrated with: taken on arrival, applied after scoring."""

    group: str
    version: int
    status: CalibrationStatus
    method: str
    curve: Curve | None = None
    features: frozenset[str] = frozenset()
    """Features this stream's config and curve read: scoring computes at least these (a
    stream whose config or imported curve differs from the service defaults)."""

    def apply(
        self, features: Sequence[Mapping[str, float]], raw: Sequence[float]
    ) -> tuple[list[float], list[float]]:
        """Calibrated rewards and the bias removed from each."""
        if self.curve is None:
            return list(raw), [0.0] * len(raw)
        return self.curve.apply(features, raw)


@dataclass(frozen=True)
class FitJob:
    """A copy of the window to fit, and the stream epoch it belongs to."""

    config: StreamConfig
    features: Array
    raw: Array
    epoch: int
    observed_at_snapshot: int


class CalibrationStream:
    def __init__(self, model: str, group: str, config: StreamConfig) -> None:
        self.model = model
        self.group = group
        self._lock = threading.Lock()
        self._config = config
        self._window = RollingWindow(config.window)
        self._curve: Curve | None = None
        self._reference: Curve | None = None
        self._version = 0
        self._frozen = False
        self._epoch = 0  # bumped by reset/import: fits of an older epoch are discarded
        self._since_fit = 0
        self._last_fit_at = time.monotonic()
        self._fitting = False
        # Held for a whole fit: an operator's refit waits for a background fit in progress
        # instead of silently doing nothing.
        self.fit_lock = threading.Lock()
        self.dirty = False  # changed since the last snapshot
        self.last_used_at = time.time()  # wall clock: idle eviction survives restarts
        # With a shared store the window lives there; these mirror its size.
        self._shared_samples: int | None = None
        self._shared_observed = 0
        self.shared_meta: dict[str, str] = {}

    # ---- request path --------------------------------------------------------------------

    def view(self) -> CurveView:
        with self._lock:
            config = self._config
            if config.method == "none":
                return CurveView(self.group, 0, CalibrationStatus.UNCALIBRATED, "none")
            active = self._curve or self._reference
            if self._frozen:
                status = CalibrationStatus.FROZEN
            elif self._curve is not None:
                status = CalibrationStatus.CALIBRATED
            elif self._reference is not None:
                status = CalibrationStatus.REFERENCE
            else:
                status = CalibrationStatus.WARMING_UP
            version = active.version if active is not None else 0
            used = {step.feature for step in config.features}
            if active is not None:
                used.update(component.feature for component in active.components)
            return CurveView(self.group, version, status, config.method, active, frozenset(used))

    @property
    def last_fit_at(self) -> float:
        """``time.monotonic()`` of the last fit (or of the stream's creation)."""
        with self._lock:
            return self._last_fit_at

    def touch(self) -> None:
        self.last_used_at = time.time()

    @property
    def holds_state(self) -> bool:
        """Whether the stream holds anything (counts against the group limit): a reset
        stream without a reference is an empty name that only keeps its version counter."""
        with self._lock:
            return bool(
                len(self._window)
                or self._shared_samples
                or self._curve
                or self._reference
                or self._frozen
            )

    def observe(self, features: Sequence[Mapping[str, float]], raw: Sequence[float]) -> None:
        matrix = features_matrix(features)
        values = np.asarray(raw, dtype=np.float64)
        keep = np.isfinite(values) & np.all(np.isfinite(matrix), axis=1)
        with self._lock:
            self._window.add(matrix[keep], values[keep])
            self._since_fit += int(keep.sum())
            self.dirty = True

    # ---- background fitting --------------------------------------------------------------

    def due(self, now: float) -> bool:
        with self._lock:
            config = self._config
            if config.method == "none" or self._frozen or self._fitting:
                return False
            if len(self._window) < config.min_samples or self._since_fit == 0:
                return False
            if self._curve is None:
                return True
            return (
                self._since_fit >= config.refit_every
                or now - self._last_fit_at >= config.refit_interval_s
            )

    def take_fit_job(self) -> FitJob | None:
        with self._lock:
            if self._fitting or self._config.method == "none":
                return None
            if len(self._window) < self._config.min_samples:
                return None
            features, raw = self._window.arrays()
            self._fitting = True
            return FitJob(self._config, features, raw, self._epoch, self._window.total)

    def install(self, job: FitJob, fitted: Curve) -> Curve | None:
        """Publish a fitted curve with the next version (and its drift from the curve it
        replaces); None if the stream moved on."""
        with self._lock:
            self._fitting = False
            if job.epoch != self._epoch or self._frozen:
                return None
            self._version += 1
            curve = fitted.published(self._version, self._curve or self._reference)
            self._curve = curve
            self._since_fit = self._window.total - job.observed_at_snapshot
            self._last_fit_at = time.monotonic()
            self.dirty = True
            return curve

    def abandon(self, job: FitJob) -> None:
        with self._lock:
            self._fitting = False
            self._last_fit_at = time.monotonic()  # do not retry a failing fit in a tight loop

    # ---- operations ---------------------------------------------------------------------

    @property
    def config(self) -> StreamConfig:
        with self._lock:
            return self._config

    @property
    def window_samples(self) -> int:
        with self._lock:
            if self._shared_samples is not None:
                return self._shared_samples
            return len(self._window)

    @property
    def observed_total(self) -> int:
        with self._lock:
            if self._shared_samples is not None:
                return self._shared_observed
            return self._window.total

    @property
    def current_curve(self) -> Curve | None:
        with self._lock:
            return self._curve

    @property
    def reference_curve(self) -> Curve | None:
        with self._lock:
            return self._reference

    def apply_shared(
        self,
        *,
        config: StreamConfig,
        frozen: bool,
        curve: Curve | None,
        reference: Curve | None,
        window_samples: int,
        observed_total: int,
    ) -> bool:
        """Mirror a stream whose state lives in a shared store; True if its curve changed."""
        with self._lock:
            changed = curve is not self._curve
            self._config = config
            self._frozen = frozen
            self._curve = curve
            self._reference = reference
            self._shared_samples = window_samples
            self._shared_observed = observed_total
            return changed

    @property
    def frozen(self) -> bool:
        with self._lock:
            return self._frozen

    def window_arrays(self) -> tuple[Array, Array]:
        with self._lock:
            return self._window.arrays()

    def freeze(self) -> None:
        with self._lock:
            self._frozen = True
            self.dirty = True

    def unfreeze(self) -> None:
        with self._lock:
            self._frozen = False
            self.dirty = True

    def reset(self, config: StreamConfig | None = None) -> None:
        """Forget the window and the fitted curves (the reference, if any, stays)."""
        with self._lock:
            if config is not None:
                self._config = config
            self._window = RollingWindow(self._config.window)
            self._curve = None
            self._since_fit = 0
            self._epoch += 1
            self._fitting = False
            self.dirty = True

    def load_reference(self, curve: Curve, config: StreamConfig | None, freeze: bool) -> Curve:
        """Install an exported curve: it calibrates until the stream's own first fit
        (or for good when frozen: reproducible evaluation).

        The curve gets this stream's next version, whatever version it had where it was
        exported: a version names one curve of one group, and versions only increase."""
        with self._lock:
            if config is not None and config != self._config:
                self._config = config
                self._window = RollingWindow(config.window)
            self._version += 1
            curve = curve.with_version(self._version)
            self._reference = curve
            self._curve = None
            self._frozen = freeze
            self._since_fit = 0
            self._epoch += 1
            self.dirty = True
            return curve

    # ---- state (export, snapshots) ----------------------------------------------------------

    def export_state(self, include_window: bool) -> tuple[dict[str, Any], tuple[Array, Array]]:
        with self._lock:
            meta: dict[str, Any] = {
                "model": self.model,
                "group": self.group,
                "config": self._config.model_dump(mode="json"),
                "version": self._version,
                "frozen": self._frozen,
                "curve": self._curve.model_dump(mode="json") if self._curve else None,
                "reference": self._reference.model_dump(mode="json") if self._reference else None,
                "observed_total": self._window.total,
                "last_used_at": self.last_used_at,
            }
            arrays = self._window.arrays() if include_window else (np.zeros((0, 3)), np.zeros(0))
            if include_window:
                self.dirty = False  # a snapshot now holds everything
            return meta, arrays

    def restore_state(self, state: StreamStateModel, features: Array, raw: Array) -> None:
        """Load a validated snapshot (see :class:`StreamStateModel`)."""
        if (
            features.ndim != 2
            or raw.ndim != 1
            or features.shape != (raw.shape[0], len(FEATURE_NAMES))
        ):
            raise ValueError(f"window arrays have shapes {features.shape} and {raw.shape}")
        finite = np.isfinite(raw) & np.all(np.isfinite(features), axis=1)
        features, raw = features[finite], raw[finite]
        curve, reference = state.curve, state.reference
        with self._lock:
            self._config = state.config
            self._window = RollingWindow(self._config.window)
            self._window.load(features, raw, state.observed_total)
            self._curve = curve
            self._reference = reference
            self._version = state.version
            self._frozen = state.frozen
            self._since_fit = 0
            self._last_fit_at = time.monotonic()
            if state.last_used_at is not None:
                self.last_used_at = state.last_used_at
            self.dirty = False
