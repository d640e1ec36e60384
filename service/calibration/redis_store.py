"""Calibration shared by every worker process and replica, in Redis (or Valkey).

Same public face as the in-memory :class:`CalibrationEngine` (the routes, the scoring path
and the metrics do not know which one they use); the state lives in Redis:

    {p}:m:{model}:groups   ZSET   group -> last use (unix s): the groups holding state
    {p}:g:{id}:meta        HASH   config, version, frozen, epoch, since_fit, observed,
                                  last_fit_at, curve_version, reference_version
    {p}:g:{id}:window      LIST   rows of 4 little-endian float64 (chars, tokens, markdown,
                                  raw reward), trimmed to the window size
    {p}:g:{id}:curve       STRING "version\\n" + curve JSON   (the current fitted curve)
    {p}:g:{id}:reference   STRING "version\\n" + curve JSON   (an imported curve)
    {p}:g:{id}:lock        STRING refit lock: a random token, with a TTL
    {p}:events             pub/sub channel: "model\\x1fgroup" when a group changed

- The request path never waits for Redis: ``current`` reads the local mirror of each
  group, ``record`` appends to a bounded local buffer. A background task flushes the
  buffer in batches (one script call per group and batch), follows pub/sub events, re-reads
  every known group each second (so a missed event costs at most a second), and refits
  groups that are due.
- One process refits a group at a time: it takes the lock (SET NX PX), renews it every
  third of its TTL while fitting, and publishes through a script that checks the lock
  token and the group's epoch and assigns the version with HINCRBY. A holder that died is
  replaced once its lock expires (``lock_ttl_s``); a stale holder cannot publish.
- When Redis is unreachable, scoring goes on with the last curves (status ``stale`` after
  ``stale_after_s``), observations wait in the buffer (oldest dropped beyond its size, and
  counted), the connection is retried with backoff, and operator calls answer 503.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import secrets
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from rewardcal.calibration.config import StreamConfig
from rewardcal.calibration.curve import Curve, features_matrix, fit_curve
from rewardcal.calibration.engine import CalibrationEngine, check_refit
from rewardcal.calibration.stream import CalibrationStatus, CalibrationStream, CurveView
from rewardcal.calibration.window import Array
from rewardcal.errors import ErrorType, ServiceError
from rewardcal.features import FEATURE_NAMES
from rewardcal.metrics import CalibrationMetrics

logger = logging.getLogger(__name__)

_ROW = struct.Struct("<4d")
_FLUSH_ROWS = 2048  # rows per script call (Lua's unpack limit is about 8,000)

_ENSURE = """
local active = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not active and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'config', ARGV[4], 'version', 0, 'frozen', 0, 'epoch', 0,
    'since_fit', 0, 'observed', 0, 'last_fit_at', ARGV[3], 'curve_version', 0,
    'reference_version', 0)
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""

_OBSERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('RPUSH', KEYS[2], unpack(ARGV, 4))
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
local n = #ARGV - 3
redis.call('HINCRBY', KEYS[1], 'since_fit', n)
redis.call('HINCRBY', KEYS[1], 'observed', n)
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return redis.call('LLEN', KEYS[2])
"""

_PUBLISH_FIT = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return -2 end
if redis.call('HGET', KEYS[1], 'frozen') == '1' then return -3 end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('SET', KEYS[2], v .. '\\n' .. ARGV[5])
redis.call('HSET', KEYS[1], 'curve_version', v, 'last_fit_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'since_fit', ARGV[3])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return v
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_RESET = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'since_fit', 0, 'curve_version', 0, 'observed', 0)
if redis.call('EXISTS', KEYS[5]) == 0 and redis.call('HGET', KEYS[1], 'frozen') ~= '1' then
  redis.call('ZREM', KEYS[4], ARGV[1])
end
redis.call('PUBLISH', ARGV[2], ARGV[1 + 2])
return 1
"""

_SET_FROZEN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'frozen', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

_IMPORT = """
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('SET', KEYS[2], v .. '\\n' .. ARGV[1])
redis.call('DEL', KEYS[3])
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], 'frozen', ARGV[2], 'since_fit', 0, 'curve_version', 0,
  'reference_version', v)
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'config', ARGV[3])
  redis.call('DEL', KEYS[4])
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return v
"""

_DELETE = """
local n = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return n
"""


@dataclass(frozen=True)
class _Keys:
    meta: str
    window: str
    curve: str
    reference: str
    lock: str
    groups: str
    member: str  # "model\x1fgroup": the event payload


def _store_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class StoreUnavailable(ServiceError):
    def __init__(self, retry_after_s: int = 2) -> None:
        super().__init__(
            ErrorType.NOT_READY,
            "the calibration store (Redis) is unreachable; scoring goes on with the last "
            "curves; retry this operation later",
            headers={"Retry-After": str(retry_after_s)},
        )


class RedisCalibrationEngine(CalibrationEngine):
    """A :class:`CalibrationEngine` whose state lives in Redis (see the module doc)."""

    def __init__(
        self,
        defaults: StreamConfig,
        url: str,
        *,
        password: str | None = None,
        max_groups: int = 64,
        metrics: CalibrationMetrics | None = None,
        poll_interval_s: float = 0.1,
        idle_ttl_s: float = 0.0,
        lock_ttl_s: float = 10.0,
        stale_after_s: float = 10.0,
        buffer_size: int = 65_536,
        prefix: str = "rewardcal",
        fit: Any = fit_curve,
        refit_cpu_share: float = 1.0,
        served_models: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            defaults,
            max_groups=max_groups,
            store=None,
            metrics=metrics,
            poll_interval_s=poll_interval_s,
            idle_ttl_s=idle_ttl_s,
            refit_cpu_share=refit_cpu_share,
            served_models=served_models,
        )
        self.url = url
        self._password = password
        self.lock_ttl_s = lock_ttl_s
        self.stale_after_s = stale_after_s
        self._prefix = prefix
        self._fit = fit
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._buffer: collections.deque[tuple[str, str, bytes]] = collections.deque(
            maxlen=buffer_size
        )
        self.dropped = 0
        self._dirty: set[tuple[str, str]] = set()
        self._last_contact = time.monotonic()
        self._up = True
        self._last_full_sync = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._fitting: set[tuple[str, str]] = set()

    # ---- keys ------------------------------------------------------------------------------

    def _keys(self, model: str, group: str) -> _Keys:
        gid = hashlib.sha256(f"{model}\0{group}".encode()).hexdigest()[:24]
        mid = hashlib.sha256(model.encode()).hexdigest()[:24]
        base = f"{self._prefix}:g:{gid}"
        return _Keys(
            meta=f"{base}:meta",
            window=f"{base}:window",
            curve=f"{base}:curve",
            reference=f"{base}:reference",
            lock=f"{base}:lock",
            groups=f"{self._prefix}:m:{mid}:groups",
            member=f"{model}\x1f{group}",
        )

    @property
    def _channel(self) -> str:
        return f"{self._prefix}:events"

    @property
    def store_name(self) -> str:
        return "redis"

    # ---- connection ---------------------------------------------------------------------------

    async def start(self) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.from_url(
            self.url,
            password=self._password,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry_on_timeout=False,
        )
        for name, source in (
            ("ensure", _ENSURE),
            ("observe", _OBSERVE),
            ("publish_fit", _PUBLISH_FIT),
            ("renew", _RENEW),
            ("release", _RELEASE),
            ("reset", _RESET),
            ("set_frozen", _SET_FROZEN),
            ("import", _IMPORT),
            ("delete", _DELETE),
        ):
            self._scripts[name] = self._client.register_script(source)
        with contextlib.suppress(*_store_errors()):
            await self._client.ping()
            self._contact()
        self._report_store()
        self._tasks = [
            asyncio.create_task(self._background(), name="rewardcal-calibration-sync"),
            asyncio.create_task(self._listen(), name="rewardcal-calibration-events"),
        ]

    async def stop(self) -> None:
        """Stop the background tasks, flush what is buffered, close; never hangs (every
        step has a deadline: a stop must not wait on an unreachable store)."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        self._tasks = []
        with contextlib.suppress(*_store_errors(), TimeoutError):
            await asyncio.wait_for(self._flush(), timeout=5.0)  # a clean stop loses nothing
        if self._client is not None:
            with contextlib.suppress(*_store_errors(), TimeoutError):
                await asyncio.wait_for(self._client.aclose(), timeout=2.0)
            self._client = None

    def _contact(self) -> None:
        self._last_contact = time.monotonic()
        if not self._up:
            self._up = True
            logger.info("calibration store %s reachable again", _safe_url(self.url))
        self._report_store()

    def _lost(self, exc: BaseException) -> None:
        if self._up:
            self._up = False
            logger.warning(
                "calibration store %s unreachable (%s): scoring goes on with the last curves; "
                "observations wait in a buffer of %d",
                _safe_url(self.url),
                type(exc).__name__,
                self._buffer.maxlen or 0,
            )
        self._report_store()

    @property
    def stale(self) -> bool:
        return time.monotonic() - self._last_contact > self.stale_after_s

    def _report_store(self) -> None:
        if self._metrics is not None:
            self._metrics.store(self._up, len(self._buffer), self.dropped)

    async def _call(self, coro: Any) -> Any:
        """An operator call: 503 while the store is unreachable."""
        try:
            result = await coro
        except _store_errors() as exc:
            self._lost(exc)
            raise StoreUnavailable() from None
        self._contact()
        return result

    # ---- request path ------------------------------------------------------------------------

    async def ensure(self, model: str, group: str) -> None:
        stream = self.find(model, group)
        if stream is not None and stream.holds_state:
            return
        keys = self._keys(model, group)
        try:
            ok = await self._scripts["ensure"](
                keys=[keys.groups, keys.meta],
                args=[group, self.max_groups, time.time(), self._config_json(self.defaults)],
            )
            self._contact()
        except _store_errors() as exc:
            # Redis down never fails scoring: the group is created locally and its
            # observations wait in the buffer (the script runs again at the flush). The
            # limit still holds, counted on the groups this process knows.
            self._lost(exc)
            with self._lock:
                ok = int(len(self._streams) < self.max_groups or (model, group) in self._streams)
        if not ok:
            raise ServiceError(
                ErrorType.INVALID_REQUEST,
                f"too many calibration groups (limit {self.max_groups}, fleet-wide); an "
                "operator can delete or reset one, idle groups are evicted, or raise "
                "calibration_max_groups",
            )
        with self._lock:
            if (model, group) not in self._streams:
                self._streams[(model, group)] = CalibrationStream(model, group, self.defaults)
        self._dirty.add((model, group))

    def stream(self, model: str, group: str, *, create: bool = True) -> CalibrationStream:
        # The fleet-wide limit was checked by ``ensure``; locally a stream is a mirror.
        with self._lock:
            stream = self._streams.get((model, group))
            if stream is None:
                if not create:
                    raise ServiceError(
                        ErrorType.NOT_FOUND,
                        f"no calibration stream {group!r} for model {model!r}",
                    )
                stream = CalibrationStream(model, group, self.defaults)
                self._streams[(model, group)] = stream
            return stream

    def current(self, model: str, group: str, *, create: bool = True) -> CurveView:
        view = super().current(model, group, create=create)
        if self.stale and view.curve is not None:
            return replace(view, status=CalibrationStatus.STALE)
        return view

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
        stream = self.find(model, group)
        if stream is None:
            return
        if observe:
            matrix = features_matrix(features)
            values = np.asarray(raw, dtype=np.float64)
            for row, value in zip(matrix, values, strict=True):
                if np.isfinite(value) and np.all(np.isfinite(row)):
                    if len(self._buffer) == self._buffer.maxlen:
                        self.dropped += 1
                    self._buffer.append((model, group, _ROW.pack(*row, value)))
        if self._metrics is not None:
            self._metrics.observed(model, group, features, raw, calibrated)
            if observe and not self._up:
                self._report_store()

    # ---- background -----------------------------------------------------------------------

    async def _background(self) -> None:
        backoff = self._poll_interval_s
        while True:
            await asyncio.sleep(backoff)
            try:
                await self._flush()
                now = time.monotonic()
                if now - self._last_full_sync >= 1.0:
                    await self._discover()
                    self._dirty.update(key for key in self._streams_keys())
                    self._last_full_sync = now
                dirty, self._dirty = self._dirty, set()
                for key in sorted(dirty):
                    await self._sync(*key)
                await self._refit_due()
                await self._evict_idle()
                self._contact()
                backoff = self._poll_interval_s
            except _store_errors() as exc:
                self._lost(exc)
                backoff = min(max(backoff * 2, 0.2), 5.0)  # reconnect with backoff
            except Exception:  # noqa: BLE001 - the background task must survive anything
                logger.exception("calibration store sync step failed")
            self._report_store()
            self._report_groups()

    async def _listen(self) -> None:
        """Follow change events: a group another process changed is re-read at once."""
        while True:
            pubsub = None
            try:
                pubsub = self._client.pubsub()
                await pubsub.subscribe(self._channel)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    data = message["data"]
                    text = data.decode() if isinstance(data, bytes) else str(data)
                    model, _, group = text.partition("\x1f")
                    if (model, group) in self._streams_keys():
                        self._dirty.add((model, group))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - reconnect whatever broke the subscription
                await asyncio.sleep(1.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()

    def _streams_keys(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._streams)

    async def _flush(self) -> None:
        """Send buffered observations, one script call per group and batch of rows."""
        while self._buffer:
            batch: dict[tuple[str, str], list[bytes]] = collections.defaultdict(list)
            taken = 0
            while self._buffer and taken < _FLUSH_ROWS:
                model, group, row = self._buffer[0]
                batch[(model, group)].append(row)
                self._buffer.popleft()
                taken += 1
            try:
                for (model, group), rows in batch.items():
                    await self._push(model, group, rows)
            except BaseException:
                # Not sent: back to the front of the buffer, in order.
                for (model, group), rows in reversed(list(batch.items())):
                    for row in reversed(rows):
                        self._buffer.appendleft((model, group, row))
                raise

    async def _push(self, model: str, group: str, rows: list[bytes]) -> None:
        keys = self._keys(model, group)
        stream = self.find(model, group)
        config = stream.config if stream is not None else self.defaults
        args = [group, config.window, time.time(), *rows]
        length = await self._scripts["observe"](
            keys=[keys.meta, keys.window, keys.groups], args=args
        )
        if length == -1:
            # The group is gone (deleted elsewhere, or created while the store was down).
            created = await self._scripts["ensure"](
                keys=[keys.groups, keys.meta],
                args=[group, self.max_groups, time.time(), self._config_json(config)],
            )
            if created:
                await self._scripts["observe"](
                    keys=[keys.meta, keys.window, keys.groups], args=args
                )
        self._dirty.add((model, group))

    async def _discover(self) -> None:
        """Groups created by other processes of the served models become known here."""
        models = {model for model, _ in self._streams_keys()} | self._served_models()
        for model in models:
            keys = self._keys(model, "")
            groups = await self._client.zrange(keys.groups, 0, -1)
            for raw_group in groups:
                group = raw_group.decode() if isinstance(raw_group, bytes) else str(raw_group)
                with self._lock:
                    if (model, group) not in self._streams:
                        self._streams[(model, group)] = CalibrationStream(
                            model, group, self.defaults
                        )

    def _served_models(self) -> set[str]:
        return set(self._served) if self._served is not None else set()

    async def _sync(self, model: str, group: str) -> None:
        """Mirror one group's shared state into the local stream."""
        keys = self._keys(model, group)
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.meta)
            pipe.llen(keys.window)
            meta_raw, length = await pipe.execute()
        if not meta_raw:
            with self._lock:
                removed = self._streams.pop((model, group), None)
            if removed is not None and self._metrics is not None:
                self._metrics.forget(model, group)
            return
        meta = {k.decode(): v.decode() for k, v in meta_raw.items()}
        stream = self.stream(model, group)
        config = StreamConfig.model_validate_json(meta["config"])
        curve = stream.current_curve
        curve_version = int(meta.get("curve_version", 0))
        if curve_version == 0:
            curve = None
        elif curve is None or curve.version != curve_version:
            curve = _parse_curve(await self._client.get(keys.curve))
        reference = stream.reference_curve
        reference_version = int(meta.get("reference_version", 0))
        if reference_version == 0:
            reference = None
        elif reference is None or reference.version != reference_version:
            reference = _parse_curve(await self._client.get(keys.reference))
        changed = stream.apply_shared(
            config=config,
            frozen=meta.get("frozen") == "1",
            curve=curve,
            reference=reference,
            window_samples=int(length),
            observed_total=int(meta.get("observed", 0)),
        )
        stream.shared_meta = meta
        if self._metrics is not None:
            self._metrics.window(model, group, int(length))
            if changed and curve is not None:
                self._metrics.refit(model, group, curve, curve.stats.drift, 0.0)

    # ---- refits ---------------------------------------------------------------------------

    def _due(self, stream: CalibrationStream) -> bool:
        meta = stream.shared_meta
        if not meta:
            return False
        config = stream.config
        if config.method == "none" or meta.get("frozen") == "1":
            return False
        since_fit = int(meta.get("since_fit", 0))
        if stream.window_samples < config.min_samples or since_fit <= 0:
            return False
        if int(meta.get("curve_version", 0)) == 0:
            return True
        waited = time.time() - float(meta.get("last_fit_at", 0))
        return since_fit >= config.refit_every or waited >= config.refit_interval_s

    async def _refit_due(self) -> None:
        for stream in self.streams():
            if not self.refit_budget.ready(time.monotonic()):
                return
            key = (stream.model, stream.group)
            if key not in self._fitting and self._due(stream):
                await self._refit(stream)

    async def _refit(self, stream: CalibrationStream) -> int | None:
        """Take the lock, fit the shared window, publish; None if another process holds
        the lock or the group moved on (reset, import, freeze) meanwhile."""
        keys = self._keys(stream.model, stream.group)
        token = secrets.token_hex(16)
        ttl_ms = int(self.lock_ttl_s * 1000)
        if not await self._client.set(keys.lock, token, nx=True, px=ttl_ms):
            return None
        key = (stream.model, stream.group)
        self._fitting.add(key)
        renewer = asyncio.create_task(self._renew(keys.lock, token, ttl_ms))
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hget(keys.meta, "epoch")
                pipe.hget(keys.meta, "since_fit")
                pipe.hget(keys.meta, "config")
                pipe.lrange(keys.window, 0, -1)
                epoch, since_fit, config_json, rows = await pipe.execute()
            if epoch is None:
                return None
            config = StreamConfig.model_validate_json(config_json)
            if len(rows) < config.min_samples:
                return None
            features, raw = _unpack(rows)
            started = time.perf_counter()
            fitted, cpu = await asyncio.to_thread(self._timed_fit, config, features, raw)
            elapsed = time.perf_counter() - started
            self.refit_budget.spent(cpu, time.monotonic())
            # The store assigns the version; the drift is measured here, from the curve
            # this process last saw calibrate the group.
            replaces = stream.current_curve or stream.reference_curve
            body = fitted.published(0, replaces).model_dump_json()
            version = await self._scripts["publish_fit"](
                keys=[keys.meta, keys.curve, keys.lock],
                args=[
                    token,
                    epoch,
                    -int(since_fit or 0),  # what this fit took (Python writes -0 as 0)
                    time.time(),
                    body,
                    self._channel,
                    keys.member,
                ],
            )
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            self._fitting.discard(key)
            with contextlib.suppress(*_store_errors()):
                await self._scripts["release"](keys=[keys.lock], args=[token])
        if version < 0:
            logger.info(
                "refit of %s/%s not published (%s)",
                stream.model,
                stream.group,
                {-1: "lock lost", -2: "group reset meanwhile", -3: "frozen meanwhile"}[version],
            )
            return None
        if self._metrics is not None:
            self._metrics.refit_duration.observe(elapsed)
        logger.info(
            "stream %s/%s: curve v%d on %d samples in %.3f s (shared)",
            stream.model,
            stream.group,
            version,
            raw.size,
            elapsed,
        )
        self._dirty.add(key)
        await self._sync(*key)
        return int(version)

    def _timed_fit(self, config: StreamConfig, features: Array, raw: Array) -> tuple[Curve, float]:
        """The fit and the CPU seconds it took (its thread's), for the refit budget."""
        cpu = time.thread_time()
        fitted: Curve = self._fit(config, features, raw, 0)
        return fitted, time.thread_time() - cpu

    async def _renew(self, lock: str, token: str, ttl_ms: int) -> None:
        while True:
            await asyncio.sleep(self.lock_ttl_s / 3)
            with contextlib.suppress(*_store_errors()):
                await self._scripts["renew"](keys=[lock], args=[token, ttl_ms])

    async def _evict_idle(self) -> None:
        if self.idle_ttl_s <= 0:
            return
        cutoff = time.time() - self.idle_ttl_s
        for model in {model for model, _ in self._streams_keys()} | self._served_models():
            groups = await self._client.zrangebyscore(self._keys(model, "").groups, "-inf", cutoff)
            for raw_group in groups:
                group = raw_group.decode() if isinstance(raw_group, bytes) else str(raw_group)
                await self._delete(model, group)
                logger.info(
                    "evicted calibration group %s/%s: idle longer than %g s",
                    model,
                    group,
                    self.idle_ttl_s,
                )

    # ---- operator API ------------------------------------------------------------------------

    async def get(self, model: str, group: str) -> CalibrationStream:
        await self._call(self._sync(model, group))
        stream = self.stream(model, group, create=False)
        await self._call(self._touch(model, group))
        return stream

    async def _touch(self, model: str, group: str) -> None:
        keys = self._keys(model, group)
        await self._client.zadd(keys.groups, {group: time.time()}, xx=True)

    async def freeze(self, model: str, group: str) -> CalibrationStream:
        return await self._set_frozen(model, group, True)

    async def unfreeze(self, model: str, group: str) -> CalibrationStream:
        await self.get(model, group)
        return await self._set_frozen(model, group, False)

    async def _set_frozen(self, model: str, group: str, frozen: bool) -> CalibrationStream:
        if frozen:
            await self._call(self._ensure_strict(model, group))
        keys = self._keys(model, group)
        await self._call(
            self._scripts["set_frozen"](
                keys=[keys.meta], args=[int(frozen), self._channel, keys.member]
            )
        )
        await self._call(self._sync(model, group))
        return self.stream(model, group, create=False)

    async def _ensure_strict(self, model: str, group: str) -> None:
        """``ensure`` for operator calls: a store failure is an error, not a local group."""
        keys = self._keys(model, group)
        ok = await self._scripts["ensure"](
            keys=[keys.groups, keys.meta],
            args=[group, self.max_groups, time.time(), self._config_json(self.defaults)],
        )
        if not ok:
            raise ServiceError(
                ErrorType.INVALID_REQUEST,
                f"too many calibration groups (limit {self.max_groups}, fleet-wide)",
            )

    async def reset(self, model: str, group: str) -> CalibrationStream:
        await self.get(model, group)
        keys = self._keys(model, group)
        await self._call(
            self._scripts["reset"](
                keys=[keys.meta, keys.window, keys.curve, keys.groups, keys.reference],
                args=[group, self._channel, keys.member],
            )
        )
        await self._call(self._sync(model, group))
        return self.stream(model, group, create=False)

    async def refit(self, model: str, group: str) -> CalibrationStream:
        stream = await self.get(model, group)
        check_refit(stream.frozen, stream.window_samples, stream.config)
        deadline = time.monotonic() + self.lock_ttl_s + 5
        while await self._call(self._refit(stream)) is None:
            # Another process holds the lock: its fit is published in a moment.
            if time.monotonic() > deadline or not self._due(stream):
                break
            await asyncio.sleep(0.05)
            await self._call(self._sync(model, group))
        return stream

    async def import_curve(
        self, model: str, group: str, curve: Curve, config: StreamConfig | None, freeze: bool
    ) -> CalibrationStream:
        await self._call(self._ensure_strict(model, group))
        keys = self._keys(model, group)
        body = curve.model_dump_json()
        config_json = self._config_json(config) if config is not None else ""
        await self._call(
            self._scripts["import"](
                keys=[keys.meta, keys.reference, keys.curve, keys.window],
                args=[body, int(freeze), config_json, self._channel, keys.member],
            )
        )
        await self._call(self._sync(model, group))
        return self.stream(model, group, create=False)

    async def remove(self, model: str, group: str) -> bool:
        return bool(await self._call(self._delete(model, group)))

    async def _delete(self, model: str, group: str) -> int:
        keys = self._keys(model, group)
        removed = await self._scripts["delete"](
            keys=[keys.meta, keys.window, keys.curve, keys.reference, keys.lock, keys.groups],
            args=[group, self._channel, keys.member],
        )
        with self._lock:
            self._streams.pop((model, group), None)
        if self._metrics is not None:
            self._metrics.forget(model, group)
        return int(removed)

    async def window(self, model: str, group: str) -> tuple[Array, Array]:
        rows = await self._call(self._client.lrange(self._keys(model, group).window, 0, -1))
        return _unpack(rows)

    def delete(self, model: str, group: str) -> bool:
        raise NotImplementedError("use remove() (the shared store is asynchronous)")

    # ---- unused here: Redis persists the state ----------------------------------------------

    def snapshot(self, *, only_dirty: bool = True) -> int:
        return 0

    def restore(self) -> int:
        return 0

    def evict_idle(self, now: float | None = None) -> list[str]:
        return []  # done fleet-wide by the background task

    @property
    def active_groups(self) -> int:
        return sum(1 for stream in self.streams() if stream.holds_state)

    @staticmethod
    def _config_json(config: StreamConfig) -> str:
        return config.model_dump_json()


def _unpack(rows: Sequence[bytes]) -> tuple[Array, Array]:
    if not rows:
        return np.zeros((0, len(FEATURE_NAMES))), np.zeros(0)
    data = np.frombuffer(b"".join(rows), dtype="<f8").reshape(len(rows), 4)
    return data[:, :3].astype(np.float64), data[:, 3].astype(np.float64)


def _parse_curve(blob: bytes | None) -> Curve | None:
    if blob is None:
        return None
    head, _, body = blob.partition(b"\n")
    return Curve.model_validate_json(body).with_version(int(head))


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
