"""The synchronous client: one pooled ``httpx.Client`` per instance, reused by every call."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import httpx

from rewardcal_client._base import ClientCore, TimeoutTypes
from rewardcal_client._http import (
    DEFAULT_TIMEOUT,
    RetryPolicy,
    decode_json,
    error_from_response,
    error_from_transport,
    new_request_id,
    parse_retry_after,
    should_retry_error,
    should_retry_status,
)
from rewardcal_client._protocol import Plan, plan_compare, plan_score, plan_texts
from rewardcal_client.types import (
    ComparePairInput,
    CompareResult,
    RewardResult,
    RewardServiceError,
    ScoreItem,
)

T = TypeVar("T")


class RewardClient(ClientCore):
    """Blocking client of a rewardcal server.

    >>> with RewardClient("http://127.0.0.1:8000", calibration_group="run-42") as rm:
    ...     results = rm.score([("What is 2+2?", "4."), ("Name a prime.", "7.")])
    ...     [r.reward for r in results]  # calibrated; r.raw_reward, r.bias, r.version, ...

    Lists longer than ``batch_size`` are sent as consecutive requests of ``batch_size``
    items; results come back in input order (``result.index`` is the input position).
    503 answers and connection failures are retried per ``retry`` (a :class:`RetryPolicy`);
    every other failure raises :class:`RewardServiceError` at once.

    ``api_key`` defaults to the ``REWARDCAL_API_KEY`` environment variable.
    ``calibration_group``, ``observe`` and ``model`` are defaults that each call may
    override. ``transport`` / ``limits`` go to httpx (tests, TLS settings, pool size);
    ``sleep`` and ``rng`` are the backoff's clock and jitter source (tests).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        calibration_group: str | None = None,
        observe: bool = True,
        model: str | None = None,
        batch_size: int = 64,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        limits: httpx.Limits | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key=api_key,
            calibration_group=calibration_group,
            observe=observe,
            model=model,
            batch_size=batch_size,
            timeout=timeout,
            retry=retry,
            headers=headers,
            rng=rng,
        )
        self._sleep = sleep
        extra: dict[str, Any] = {"transport": transport}
        if limits is not None:
            extra["limits"] = limits
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=self._timeout, **extra
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool. The client cannot be used afterwards."""
        self._http.close()

    @property
    def closed(self) -> bool:
        return self._http.is_closed

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- scoring ------------------------------------------------------------------------------

    def score(
        self,
        items: Iterable[ScoreItem],
        *,
        calibration_group: str | None = None,
        observe: bool | None = None,
        model: str | None = None,
        batch_size: int | None = None,
    ) -> list[RewardResult]:
        """Score ``(prompt, response)`` tuples, ``{"prompt", "response"}`` or
        ``{"messages": [...]}`` dicts, or conversations (lists of messages) with
        ``POST /v1/rewards``. The server applies the reward model's chat template; for a
        conversation the last assistant turn is the response whose length is measured."""
        options = self._call_options(calibration_group, observe, model, batch_size)
        return self._run(plan_score(items, **options))

    def compare(
        self,
        pairs: Iterable[ComparePairInput],
        *,
        calibration_group: str | None = None,
        observe: bool | None = None,
        model: str | None = None,
        batch_size: int | None = None,
    ) -> list[CompareResult]:
        """Score DPO pairs ``(prompt, chosen, rejected)`` with ``POST /v1/rewards/compare``:
        raw and calibrated margins and ``p_chosen = sigmoid(margin)`` per pair.
        ``batch_size`` counts pairs (each pair is two responses on the server)."""
        options = self._call_options(calibration_group, observe, model, batch_size)
        return self._run(plan_compare(pairs, **options))

    def score_texts(
        self,
        texts: Iterable[str],
        prompts: Iterable[str | None] | None = None,
        *,
        calibration_group: str | None = None,
        observe: bool | None = None,
        batch_size: int | None = None,
    ) -> list[RewardResult]:
        """Score already-templated texts (prompt + response) as they are, with
        ``POST /get_reward``. With ``prompts``, the response part measured by calibration
        is ``text[len(prompt):]`` (when the text starts with its prompt); otherwise the
        whole text. ``status`` is ``None`` in these results (the route does not report it)."""
        options = self._call_options(calibration_group, observe, None, batch_size)
        del options["model"]
        return self._run(plan_texts(texts, prompts, **options))

    # -- operations ---------------------------------------------------------------------------

    def health(self) -> bool:
        """``GET /health``: True when the process answers (never needs a key, no retries)."""
        try:
            return self._http.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    def ready(self) -> bool:
        """``GET /ready``: True once the model is loaded; False while loading (503) or
        unreachable. Raises :class:`RewardServiceError` for other answers (a bad key: 401)."""
        request_id = new_request_id()
        try:
            response = self._http.get("/ready", headers={"X-Request-ID": request_id})
        except httpx.TransportError:
            return False
        if response.status_code == 200:
            return True
        if response.status_code == 503:
            return False
        raise error_from_response(response, request_id, 1)

    def wait_until_ready(self, timeout_s: float = 300.0, poll_s: float = 0.5) -> None:
        """Block until ``ready()``; raise ``TimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.base_url} not ready after {timeout_s:g} s")
            self._sleep(poll_s)

    def models(self) -> list[str]:
        """Served model ids (``GET /v1/models``), for the ``model`` argument."""
        body = self._request("GET", "/v1/models")
        return [str(card["id"]) for card in body.get("data", [])]

    def calibration(self, group: str | None = None) -> dict[str, Any]:
        """``GET /v1/calibration/{group}`` (default: the client's group, else ``default``):
        config, window size, curve version and status, curve points, length-reward
        Spearman raw and calibrated. 404 when the group has never been used."""
        body = self._request("GET", self._calibration_path(group))
        if not isinstance(body, dict):
            raise RewardServiceError("unexpected calibration answer", type="invalid_response")
        return body

    # -- transport ----------------------------------------------------------------------------

    def _run(self, plan: Plan[T]) -> list[T]:
        return plan.merge(
            [
                plan.parse(self._request("POST", plan.path, chunk.body), chunk.offset)
                for chunk in plan.chunks
            ]
        )

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        """Send with retries on 503 and connection failures; return the decoded JSON."""
        request_id = new_request_id()
        headers = {"X-Request-ID": request_id}
        retry = 0
        while True:
            attempts = retry + 1
            try:
                response = self._http.request(method, path, json=body, headers=headers)
            except httpx.TransportError as exc:
                if not should_retry_error(exc) or retry >= self.retry.max_retries:
                    raise error_from_transport(exc, request_id, attempts) from exc
                delay = self.retry.delay(retry, None, self._rng)
            else:
                if response.is_success:
                    return decode_json(response, request_id, attempts)
                if not should_retry_status(response.status_code) or retry >= self.retry.max_retries:
                    raise error_from_response(response, request_id, attempts)
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                delay = self.retry.delay(retry, retry_after, self._rng)
            self._sleep(delay)
            retry += 1
