"""Prometheus metrics: one prefix, seconds as the unit, buckets chosen per quantity.

Each app gets its own ``CollectorRegistry`` (tests build many apps; a global registry
would leak series between them). Bias-drift metrics live with the calibration streams.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "rewardcal"

# Geometric: request latencies span a millisecond (one cached item) to minutes (a large
# request behind a full queue).
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
# Powers of two: batch sizes and token counts are set in powers of two.
BATCH_SIZE_BUCKETS = tuple(float(2**k) for k in range(0, 11))
BATCH_TOKEN_BUCKETS = tuple(float(2**k) for k in range(5, 19))


class ServingMetrics:
    """Serving-path metrics (requests, queue, batches, inference)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # Labelled children looked up once: route and status sets are small and closed
        # (unmatched paths share one label); the served model is one per process.
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._items_children: dict[str, Any] = {}
        self.requests_total = Counter(
            f"{PREFIX}_requests_total",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=registry,
        )
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_depth_gauge = Gauge(
            f"{PREFIX}_queue_depth",
            "Inputs waiting for a batch",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.queue_duration = Histogram(
            f"{PREFIX}_queue_duration_seconds",
            "Time an input waited before its batch ran",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size",
            "Inputs per forward pass",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_tokens = Histogram(
            f"{PREFIX}_batch_tokens",
            "Padded tokens per forward pass",
            buckets=BATCH_TOKEN_BUCKETS,
            registry=registry,
        )
        self.inference_duration = Histogram(
            f"{PREFIX}_inference_duration_seconds",
            "Backend time per batch",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.items_total = Counter(
            f"{PREFIX}_items_total", "Scored inputs by model", ["model"], registry=registry
        )
        self.errors_total = Counter(
            f"{PREFIX}_errors_total",
            "Failed requests by error type",
            ["type"],
            registry=registry,
        )
        self.templated_responses_total = Counter(
            f"{PREFIX}_templated_responses_total",
            "Templated text inputs by whether the chat template located the response "
            "(located=false: the whole text was measured)",
            ["model", "located"],
            registry=registry,
        )
        self.rejected_total = Counter(
            f"{PREFIX}_rejected_items_total",
            "Inputs refused by admission control (503)",
            registry=registry,
        )
        self.ready_gauge = Gauge(
            f"{PREFIX}_ready",
            "1 while /ready answers 200 (model loaded), else 0: alerts cannot probe /ready",
            multiprocess_mode="livemin",
            registry=registry,
        )

    def queue_depth(self, depth: int) -> None:
        self.queue_depth_gauge.set(depth)

    def queue_time(self, seconds: float) -> None:
        self.queue_duration.observe(seconds)

    def batch(self, size: int, padded_tokens: int) -> None:
        self.batch_size.observe(size)
        self.batch_tokens.observe(padded_tokens)

    def inference_time(self, seconds: float) -> None:
        self.inference_duration.observe(seconds)

    def set_ready(self, ready: bool) -> None:
        self.ready_gauge.set(1 if ready else 0)

    def rejected(self, count: int) -> None:
        self.rejected_total.inc(count)

    def request(self, route: str, status: int, seconds: float) -> None:
        # The labelled children are looked up once per (route, status): ``labels()`` costs
        # a lock and a dict build on every call, a visible part of a one-sample request.
        key = (route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests_total.labels(route=route, status=str(status)),
                self.request_duration.labels(route=route),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def error(self, error_type: str) -> None:
        self.errors_total.labels(type=error_type).inc()

    def items(self, model: str, count: int) -> None:
        child = self._items_children.get(model)
        if child is None:
            child = self._items_children[model] = self.items_total.labels(model=model)
        child.inc(count)

    def templated_responses(self, model: str, located: int, fallback: int) -> None:
        if located:
            self.templated_responses_total.labels(model=model, located="true").inc(located)
        if fallback:
            self.templated_responses_total.labels(model=model, located="false").inc(fallback)


# Rewards of common reward models sit within about ±10 (logits); finer near 0 where
# calibrated residuals live.
REWARD_BUCKETS = (
    -10.0,
    -5.0,
    -3.0,
    -2.0,
    -1.0,
    -0.5,
    -0.25,
    0.0,
    0.25,
    0.5,
    1.0,
    2.0,
    3.0,
    5.0,
    10.0,
)
# Response lengths in characters: geometric from a one-liner to a long essay.
CHARS_BUCKETS = tuple(float(2**k) for k in range(4, 17))
REFIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class CalibrationMetrics:
    """Bias-drift metrics per (model, group). Label cardinality is bounded by
    ``calibration_max_groups`` (streams beyond it are refused)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["model", "group"]
        self.reward = Histogram(
            f"{PREFIX}_reward",
            "Rewards served, raw and calibrated",
            ["model", "group", "kind"],
            buckets=REWARD_BUCKETS,
            registry=registry,
        )
        self.response_chars = Histogram(
            f"{PREFIX}_response_chars",
            "Response length in characters",
            labels,
            buckets=CHARS_BUCKETS,
            registry=registry,
        )
        self.spearman = Gauge(
            f"{PREFIX}_length_reward_spearman",
            "Spearman correlation of response length and reward over the window "
            "(kind=raw: the model's bias; kind=calibrated: what is left)",
            ["model", "group", "kind"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.slope = Gauge(
            f"{PREFIX}_bias_slope",
            "Reward per 1,000 characters of the current bias curve",
            labels,
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.drift = Gauge(
            f"{PREFIX}_curve_drift",
            "Largest |difference| between consecutive curve versions over the window's range",
            labels,
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.version = Gauge(
            f"{PREFIX}_curve_version",
            "Version of the current calibration curve",
            labels,
            multiprocess_mode="max",
            registry=registry,
        )
        self.window_samples = Gauge(
            f"{PREFIX}_window_samples",
            "Observations in the calibration window",
            labels,
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.groups_gauge = Gauge(
            f"{PREFIX}_calibration_groups",
            "Calibration groups holding state (kind=active) and the limit (kind=limit)",
            ["kind"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.store_up = Gauge(
            f"{PREFIX}_calibration_store_up",
            "1 while the calibration store answers (always 1 for the memory store)",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.store_buffered = Gauge(
            f"{PREFIX}_calibration_store_buffered",
            "Observations waiting in this process for the shared store",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.store_dropped = Counter(
            f"{PREFIX}_calibration_store_dropped_observations",
            "Observations dropped from a full buffer while the shared store was unreachable",
            registry=registry,
        )
        self.store_up.set(1)
        self.span = Gauge(
            f"{PREFIX}_lowess_span",
            "LOWESS span of the current curve (chosen by cross-validation when frac is auto)",
            labels,
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self.refit_duration = Histogram(
            f"{PREFIX}_refit_duration_seconds",
            "Time to refit a calibration curve",
            buckets=REFIT_BUCKETS,
            registry=registry,
        )

    def observed(self, model: str, group: str, features: Any, raw: Any, calibrated: Any) -> None:
        raw_hist = self.reward.labels(model=model, group=group, kind="raw")
        cal_hist = self.reward.labels(model=model, group=group, kind="calibrated")
        chars_hist = self.response_chars.labels(model=model, group=group)
        for feature, r, c in zip(features, raw, calibrated, strict=True):
            raw_hist.observe(r)
            cal_hist.observe(c)
            chars_hist.observe(feature["chars"])

    def window(self, model: str, group: str, samples: int) -> None:
        self.window_samples.labels(model=model, group=group).set(samples)

    def refit(
        self, model: str, group: str, curve: Any, drift: float | None, seconds: float
    ) -> None:
        self.refit_duration.observe(seconds)
        self.version.labels(model=model, group=group).set(curve.version)
        stats = curve.stats
        if stats.spearman_raw is not None:
            self.spearman.labels(model=model, group=group, kind="raw").set(stats.spearman_raw)
        if stats.spearman_calibrated is not None:
            self.spearman.labels(model=model, group=group, kind="calibrated").set(
                stats.spearman_calibrated
            )
        if stats.slope_per_1k is not None:
            self.slope.labels(model=model, group=group).set(stats.slope_per_1k)
        if drift is not None:
            self.drift.labels(model=model, group=group).set(drift)
        if getattr(curve, "span", None) is not None:
            self.span.labels(model=model, group=group).set(curve.span)

    def store(self, up: bool, buffered: int, dropped_total: int) -> None:
        self.store_up.set(1 if up else 0)
        self.store_buffered.set(buffered)
        # Counters only go up: add what was dropped since the last report.
        seen = self.store_dropped._value.get()  # noqa: SLF001 - the counter's own total
        if dropped_total > seen:
            self.store_dropped.inc(dropped_total - seen)

    def groups(self, active: int, limit: int) -> None:
        self.groups_gauge.labels(kind="active").set(active)
        self.groups_gauge.labels(kind="limit").set(limit)

    def forget(self, model: str, group: str) -> None:
        """Drop a deleted group's series, so that deleted groups do not pile up labels."""
        for metric in (self.response_chars, self.slope, self.drift, self.version, self.span):
            _remove(metric, model, group)
        _remove(self.window_samples, model, group)
        for kind in ("raw", "calibrated"):
            _remove(self.reward, model, group, kind)
            _remove(self.spearman, model, group, kind)

    def restored(self, model: str, group: str, version: int, samples: int) -> None:
        self.version.labels(model=model, group=group).set(version)
        self.window(model, group, samples)


def multiprocess_dir() -> str | None:
    """Set when several worker processes serve one port (``workers`` > 1): each writes its
    metrics to files there and /metrics adds them up (prometheus_client's multiprocess
    mode; gauges say how: livesum, max, mostrecent...)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition(registry: CollectorRegistry) -> bytes:
    """The /metrics body: this process's registry, or every worker's in multiprocess mode."""
    if multiprocess_dir() is None:
        return generate_latest(registry)
    from prometheus_client import multiprocess

    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    return generate_latest(combined)


def _remove(metric: Any, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass  # the series was never created
