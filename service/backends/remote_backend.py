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
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from rewardcal.backends.base import (
    BackendLimits,
    BackendStartError,
    LocalTokenizerBackend,
    RewardBackend,
)
from rewardcal.backends.registry import register_backend
from rewardcal.config import Settings
from rewardcal.errors import ErrorType, ServiceError

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
"""Pooled connections to the server: concurrent /classify calls beyond it wait for one."""
HEALTH_TIMEOUT_S = 5.0
"""/ready polls /health: a hung server must not hold the readiness probe."""


class RemoteError(Exception):
    """The remote server could not answer (after retries); the message is one line."""


class RemoteBackend(LocalTokenizerBackend):
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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network (tests use ``httpx.MockTransport``)."""
        super().__init__(max_input_tokens, batches_itself=True)
        self._base_url = base_url.rstrip("/")
        self._model_path = model_path
        self._model = model
        self._requested_max_tokens = max_input_tokens
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._trust_remote_code = trust_remote_code
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    @property
    def model(self) -> str | None:
        """The remote model name requests carry (known after start)."""
        return self._model

    async def start(self) -> None:
        tokenizer, context = await asyncio.to_thread(self._load_tokenizer)
        self._tokenizer = tokenizer
        self._client = httpx.AsyncClient(
            base_url=self._base_url,
            timeout=httpx.Timeout(self._timeout_s, connect=min(10.0, self._timeout_s)),
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
            ),
            transport=self._transport,
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

    def _load_tokenizer(self) -> tuple[Any, int]:
        from transformers import AutoConfig, AutoTokenizer

        from rewardcal.backends.transformers_backend import _context_length

        try:
            tokenizer = AutoTokenizer.from_pretrained(
                self._model_path, trust_remote_code=self._trust_remote_code
            )
        except Exception as exc:  # noqa: BLE001 - any loader failure becomes one line
            raise BackendStartError(
                f"cannot load the tokenizer from {self._model_path}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            config: Any = AutoConfig.from_pretrained(
                self._model_path, trust_remote_code=self._trust_remote_code
            )
        except Exception:  # noqa: BLE001 - a tokenizer-only directory is enough
            config = None
        if config is None:
            limit = getattr(tokenizer, "model_max_length", None)
            context = int(limit) if isinstance(limit, int) and 0 < limit < 10**9 else 10**9
        else:
            context = _context_length(config, tokenizer)
        return tokenizer, context

    async def _resolve_model(self) -> tuple[str, int | None]:
        """The model to send requests to, and its max_model_len as the server reports it."""
        response = await self._send("GET", "/v1/models")
        if response.status_code != 200:
            raise RemoteError(f"GET /v1/models answered {_describe(response)}")
        cards = {
            str(card["id"]): card
            for card in response.json().get("data", [])
            if isinstance(card, dict) and "id" in card
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
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def health(self) -> bool:
        client = self._client
        if client is None:
            return False
        try:
            response = await client.get("/health", timeout=min(HEALTH_TIMEOUT_S, self._timeout_s))
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def score(self, batch: Sequence[Sequence[int]]) -> list[float]:
        if not batch:
            return []
        payload = {
            "model": self._model,
            "input": [list(ids) for ids in batch],
            "use_activation": False,
            "activation": False,  # older servers (see the module docstring)
        }
        try:
            response = await self._send("POST", "/classify", payload)
        except RemoteError as exc:
            raise ServiceError(
                ErrorType.BACKEND, f"remote vLLM server at {self._base_url}: {exc}"
            ) from None
        if response.status_code != 200:
            raise ServiceError(
                ErrorType.BACKEND,
                f"remote vLLM server at {self._base_url} refused the request: "
                f"{_describe(response)}",
            )
        try:
            data = sorted(response.json()["data"], key=lambda d: int(d["index"]))
            scores = [float(d["probs"][0]) for d in data]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ServiceError(
                ErrorType.BACKEND,
                f"remote vLLM server at {self._base_url} sent an unexpected answer: {exc!r}",
            ) from None
        if len(scores) != len(batch):
            raise ServiceError(
                ErrorType.BACKEND,
                f"remote vLLM server returned {len(scores)} scores for {len(batch)} inputs",
            )
        return scores

    async def _send(
        self, method: str, path: str, payload: dict[str, Any] | None = None
    ) -> httpx.Response:
        """One call with the retry policy; returns any answer below 500.

        Raises RemoteError when every attempt failed with a connection error or a 5xx.
        """
        client = self._client
        if client is None:
            raise RemoteError("backend not started")
        attempts = self._retries + 1
        failure = ""
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.backoff_delay(attempt - 1))
            try:
                response = await client.request(method, path, json=payload)
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}".rstrip(": ")
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
            if response.status_code < 500:
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

    def backoff_delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (0-based): doubling, capped, with jitter
        so that many clients of one restarting server do not retry in lockstep."""
        ceiling = min(self._max_backoff_s, self._backoff_s * 2**retry)
        return ceiling * (0.5 + random.random() / 2)


def _describe(response: httpx.Response) -> str:
    """``HTTP 400: <the server's message>`` in one line."""
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            error = body.get("error", body)
            message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
    except ValueError:
        message = response.text
    message = " ".join(message.split())[:300]
    return f"HTTP {response.status_code}" + (f": {message}" if message else "")


@register_backend("remote")
def _create(settings: Settings, model_path: Path) -> RewardBackend:
    if settings.remote_url is None:  # refused by Settings already; keeps the type checker honest
        raise ValueError("backend remote needs remote_url")
    return RemoteBackend(
        settings.remote_url,
        model_path,
        model=settings.remote_model,
        max_input_tokens=settings.max_input_tokens,
        timeout_s=settings.remote_timeout_s,
        retries=settings.remote_retries,
        trust_remote_code=settings.trust_remote_code,
    )
