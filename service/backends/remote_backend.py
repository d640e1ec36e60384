"""remote backend: score through an existing vLLM server's ``/classify``.

For users who already run vLLM: the service tokenizes locally (``model_path`` holds the
served model's tokenizer and chat template), sends token ids, and calibrates what comes
back. Token ids rather than text, so that the remote server scores exactly the tokens every
other backend scores (no second chat template, no second BOS).

The request asks for raw logits with ``use_activation: false`` and the legacy
``activation: false`` as well: vLLM 0.32 ignores the unknown legacy field (logged at debug
level; checked against a real server in the tests), while an older server that only knows
``activation`` would otherwise silently return sigmoid(logit).

Failures: connection errors (refused, reset, timeouts) and 5xx answers are retried with
exponential backoff (the server may be restarting); 4xx answers are never retried (the same
request would fail again). What still fails becomes a ``backend_error`` (502).

HTTP goes through aiohttp (the client vLLM's own tools use): per upstream call it costs
about a sixth of the CPU of httpx (0.17 vs 1.11 ms, bench/bench_upstream_client.py),
and under a trainer's load this call is a large share of the front end's CPU.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from rewardcal.backends.base import BackendLimits, BackendStartError, RewardBackend
from rewardcal.errors import ErrorType, ServiceError
from rewardcal.log_context import request_id_var
from rewardcal.pipeline.artifacts import ModelArtifacts, load_model_artifacts

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
"""Pooled connections to the server: concurrent /classify calls beyond it wait for one."""
MAX_CONCURRENT_CALLS = 4
"""Upstream /classify calls in flight at once; inputs arriving meanwhile share the next one
(the server batches every call's inputs with the others anyway)."""
MAX_INPUTS_PER_CALL = 512
"""Most inputs one upstream call carries (one request's inputs always go together)."""
HEALTH_TIMEOUT_S = 5.0
"""/ready polls /health: a hung server must not hold the readiness probe."""


_JSON_HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True)
class _Answer:
    """An upstream answer, read whole."""

    status: int
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class _Refused(ServiceError):
    """The server answered, but not with scores (4xx, a malformed answer): a request sent on
    its own may still succeed, when another request's input was what it refused."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorType.BACKEND, message)


@dataclass
class _Waiting:
    batch: Sequence[Sequence[int]]
    future: asyncio.Future[list[float]]
    request_id: str = field(default_factory=request_id_var.get)


MAX_FORWARDED_IDS = 8
"""Request ids an upstream call names in X-Request-ID (one call may carry many requests)."""


def upstream_request_id(ids: Sequence[str]) -> str | None:
    """The request-id part of one upstream call's X-Request-ID: the ids of the requests it
    carries (vLLM's server builds its own request ids from that header, so its log and ours
    name the same requests). Each attempt appends a fresh suffix (see ``_send``): clients'
    ids need not be unique, and a retry must not reuse an id the server may still run."""
    named = [i for i in ids if i and i != "-"]
    if not named:
        return None
    head = ",".join(named[:MAX_FORWARDED_IDS])
    more = len(named) - MAX_FORWARDED_IDS
    return f"{head},+{more}" if more > 0 else head


class RemoteError(Exception):
    """The remote server could not answer (after retries); the message is one line."""


class RemoteBackend(RewardBackend):
    name = "remote"

    def __init__(
        self,
        base_url: str,
        model_path: Path,
        *,
        model: str | None = None,
        max_input_tokens: int = 512,
        timeout_s: float = 120.0,
        retries: int = 3,
        backoff_s: float = 0.25,
        max_backoff_s: float = 8.0,
        trust_remote_code: bool = False,
    ) -> None:
        self._limits = BackendLimits(max_input_tokens, batches_itself=True)
        self.artifacts: ModelArtifacts | None = None
        self._base_url = base_url.rstrip("/")
        self._model_path = model_path
        self._model = model
        self._requested_max_tokens = max_input_tokens
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._trust_remote_code = trust_remote_code
        self._session: aiohttp.ClientSession | None = None
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._in_flight = 0
        self._calls: set[asyncio.Task[None]] = set()

    @property
    def model(self) -> str | None:
        """The remote model name requests carry (known after start)."""
        return self._model

    @property
    def limits(self) -> BackendLimits:
        return self._limits

    async def start(self, artifacts: ModelArtifacts | None = None) -> None:
        if artifacts is None:
            artifacts = await asyncio.to_thread(
                load_model_artifacts,
                self._model_path,
                trust_remote_code=self._trust_remote_code,
                config_required=False,
            )
        self.artifacts = artifacts
        context = artifacts.context_length
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=self._timeout_s, connect=min(10.0, self._timeout_s)
            ),
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
            # The server's answers are read as bytes and parsed with orjson.
            raise_for_status=False,
        )
        try:
            model, remote_context = await self._resolve_model()
        except (RemoteError, ValueError) as exc:
            await self.stop()
            raise BackendStartError(f"remote vLLM server at {self._base_url}: {exc}") from None
        self._model = model
        limits = [self._requested_max_tokens, context]
        if remote_context is not None:
            limits.append(remote_context)
        self._limits = BackendLimits(max_input_tokens=min(limits), batches_itself=True)
        logger.info(
            "scoring through %s (model %s), context %d tokens",
            self._base_url,
            model,
            self._limits.max_input_tokens,
        )

    async def _resolve_model(self) -> tuple[str, int | None]:
        """The model to send requests to, and its max_model_len as the server reports it."""
        response = await self._send("GET", "/v1/models")
        if response.status != 200:
            raise RemoteError(f"GET /v1/models answered {_describe(response)}")
        try:
            listed = response.json().get("data", [])
        except (ValueError, AttributeError):
            raise RemoteError("GET /v1/models answered something else than a model list") from None
        cards = {
            str(card["id"]): card for card in listed if isinstance(card, dict) and "id" in card
        }
        if self._model is None:
            if len(cards) != 1:
                raise ValueError(
                    f"it serves {len(cards)} models ({', '.join(sorted(cards))}); "
                    "set remote_model to one of them"
                )
            model = next(iter(cards))
        elif self._model in cards:
            model = self._model
        else:
            raise ValueError(
                f"it does not serve model {self._model!r} (it serves: "
                f"{', '.join(sorted(cards)) or 'none'})"
            )
        max_len = cards[model].get("max_model_len")
        return model, int(max_len) if isinstance(max_len, int) and max_len > 0 else None

    async def stop(self) -> None:
        for task in list(self._calls):
            task.cancel()
        while self._waiting:
            waiting = self._waiting.popleft()
            if not waiting.future.done():
                waiting.future.set_exception(
                    ServiceError(ErrorType.NOT_READY, "the service is shutting down")
                )
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def health(self) -> bool:
        session = self._session
        if session is None:
            return False
        timeout = aiohttp.ClientTimeout(total=min(HEALTH_TIMEOUT_S, self._timeout_s))
        try:
            async with session.get(self._base_url + "/health", timeout=timeout) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def score(self, batch: Sequence[Sequence[int]]) -> list[float]:
        """Raw rewards for ``batch``. Concurrent calls share upstream requests: inputs that
        arrive while ``MAX_CONCURRENT_CALLS`` calls are in flight go out together in the next
        one (one HTTP exchange costs the same CPU for 1 input or 200: see bench/frontend.py)."""
        if not batch:
            return []
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(batch, future))
        if self._in_flight < MAX_CONCURRENT_CALLS:
            self._dispatch()
        return await future

    def _dispatch(self) -> None:
        """Send what waits, in calls of at most MAX_INPUTS_PER_CALL inputs."""
        while self._waiting and self._in_flight < MAX_CONCURRENT_CALLS:
            group: list[_Waiting] = []
            count = 0
            while self._waiting and (
                not group or count + len(self._waiting[0].batch) <= MAX_INPUTS_PER_CALL
            ):
                waiting = self._waiting.popleft()
                if not waiting.future.done():  # its request went away before the call
                    group.append(waiting)
                    count += len(waiting.batch)
            if group:
                self._in_flight += 1
                task = asyncio.get_running_loop().create_task(self._call(group))
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)

    async def _call(self, group: list[_Waiting]) -> None:
        try:
            await self._answer(group)
        finally:
            self._in_flight -= 1
            self._dispatch()

    async def _answer(self, group: list[_Waiting]) -> None:
        inputs = [ids for waiting in group for ids in waiting.batch]
        try:
            scores = await self._classify(
                inputs, upstream_request_id([waiting.request_id for waiting in group])
            )
        except ServiceError as exc:
            if len(group) > 1 and isinstance(exc, _Refused):
                # One request's input may be what the server refuses: ask for each request
                # on its own, so that only that request fails.
                await asyncio.gather(*(self._answer([waiting]) for waiting in group))
                return
            for waiting in group:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            return
        start = 0
        for waiting in group:
            end = start + len(waiting.batch)
            if not waiting.future.done():
                waiting.future.set_result(scores[start:end])
            start = end

    async def _classify(
        self, batch: Sequence[Sequence[int]], request_id: str | None = None
    ) -> list[float]:
        payload = {
            "model": self._model,
            "input": [ids if isinstance(ids, list) else list(ids) for ids in batch],
            "use_activation": False,
            "activation": False,  # older servers (see the module docstring)
        }
        try:
            response = await self._send("POST", "/classify", payload, request_id)
        except RemoteError as exc:
            raise ServiceError(
                ErrorType.BACKEND, f"remote vLLM server at {self._base_url}: {exc}"
            ) from None
        if response.status != 200:
            raise _Refused(
                f"remote vLLM server at {self._base_url} refused the request: {_describe(response)}"
            )
        try:
            data = sorted(response.json()["data"], key=lambda d: int(d["index"]))
            scores = [float(d["probs"][0]) for d in data]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise _Refused(
                f"remote vLLM server at {self._base_url} sent an unexpected answer: {exc!r}"
            ) from None
        if [int(d["index"]) for d in data] != list(range(len(batch))):
            raise _Refused(
                f"remote vLLM server returned {len(scores)} scores for {len(batch)} inputs "
                "(indices missing or repeated)"
            )
        if not all(math.isfinite(s) for s in scores):
            # A NaN or infinite score would enter the calibration window and every later
            # curve; refused like a bad answer, so only the input behind it fails.
            raise _Refused(f"remote vLLM server at {self._base_url} returned a non-finite score")
        return scores

    async def _send(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> _Answer:
        """One call with the retry policy; returns any answer below 500.

        Raises RemoteError when every attempt failed with a connection error or a 5xx.
        """
        body = None if payload is None else orjson.dumps(payload)
        headers = dict(_JSON_HEADERS) if body is not None else {}
        attempts = self._retries + 1
        failure = ""
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.backoff_delay(attempt - 1))
            if request_id is not None:
                headers["x-request-id"] = f"{request_id}-{uuid.uuid4().hex[:12]}"
            try:
                response = await self._exchange(method, path, body, headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = _one_line(exc)
                logger.warning(
                    "%s %s%s failed (attempt %d/%d): %s",
                    method,
                    self._base_url,
                    path,
                    attempt + 1,
                    attempts,
                    failure,
                )
                continue
            if response.status < 500:
                return response
            failure = _describe(response)
            logger.warning(
                "%s %s%s answered %s (attempt %d/%d)",
                method,
                self._base_url,
                path,
                failure,
                attempt + 1,
                attempts,
            )
        raise RemoteError(f"{method} {path} failed after {attempts} attempts: {failure}")

    async def _exchange(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> _Answer:
        """One HTTP exchange, its answer read whole."""
        session = self._session
        if session is None:
            raise RemoteError("backend not started")
        async with session.request(
            method, self._base_url + path, data=body, headers=headers
        ) as response:
            return _Answer(response.status, await response.read())

    def backoff_delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (0-based): doubling, capped, with jitter
        so that many clients of one restarting server do not retry in lockstep."""
        ceiling = min(self._max_backoff_s, self._backoff_s * 2**retry)
        return ceiling * (0.5 + random.random() / 2)


def _describe(response: _Answer) -> str:
    """``HTTP 400: <the server's message>`` in one line."""
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            error = body.get("error", body)
            message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
    except ValueError:
        message = response.body.decode("utf-8", "replace")
    message = " ".join(message.split())[:300]
    return f"HTTP {response.status}" + (f": {message}" if message else "")


def _one_line(exc: BaseException) -> str:
    """``ExceptionName: message`` on one line (a timeout's message is empty)."""
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
