"""The asyncio client: one pooled ``httpx.AsyncClient``; chunks of a big list in parallel."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
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


class AsyncRewardClient(ClientCore):
    """Non-blocking client of a rewardcal server; same methods as :class:`RewardClient`.

    >>> async with AsyncRewardClient("http://127.0.0.1:8000", max_concurrency=4) as rm:
    ...     results = await rm.score(pairs)  # 1,000 pairs: 16 requests of 64, 4 at a time

    A list longer than ``batch_size`` is split into chunks of ``batch_size`` items that are
    sent concurrently, at most ``max_concurrency`` at a time; results come back in input
    order. If one chunk fails for good, the others are cancelled and its error is raised.
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
        max_concurrency: int = 4,
        timeout: TimeoutTypes = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
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
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.max_concurrency = max_concurrency
        self._sleep = sleep
        extra: dict[str, Any] = {"transport": transport}
        if limits is not None:
            extra["limits"] = limits
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=self._timeout, **extra
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection pool. The client cannot be used afterwards."""
        await self._http.aclose()

    aclose = close

    @property
    def closed(self) -> bool:
        return self._http.is_closed

    async def __aenter__(self) -> AsyncRewardClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- scoring ------------------------------------------------------------------------------

    async def score(
        self,
        items: Iterable[ScoreItem],
        *,
        calibration_group: str | None = None,
        observe: bool | None = None,
        model: str | None = None,
        batch_size: int | None = None,
    ) -> list[RewardResult]:
        """See :meth:`RewardClient.score`."""
        options = self._call_options(calibration_group, observe, model, batch_size)
        return await self._run(plan_score(items, **options))

    async def compare(
        self,
        pairs: Iterable[ComparePairInput],
        *,
        calibration_group: str | None = None,
        observe: bool | None = None,
        model: str | None = None,
        batch_size: int | None = None,
    ) -> list[CompareResult]:
        """See :meth:`RewardClient.compare`."""
        options = self._call_options(calibration_group, observe, model, batch_size)
        return await self._run(plan_compare(pairs, **options))

    async def score_texts(
        self,
        texts: Iterable[str],
        prompts: Iterable[str | None] | None = None,
        *,
        calibration_group: str | None = None,
        observe: bool | None = None,
        batch_size: int | None = None,
    ) -> list[RewardResult]:
        """See :meth:`RewardClient.score_texts`."""
        options = self._call_options(calibration_group, observe, None, batch_size)
        del options["model"]
        return await self._run(plan_texts(texts, prompts, **options))

    # -- operations ---------------------------------------------------------------------------

    async def health(self) -> bool:
        """See :meth:`RewardClient.health`."""
        try:
            return (await self._http.get("/health")).status_code == 200
        except httpx.TransportError:
            return False

    async def ready(self) -> bool:
        """See :meth:`RewardClient.ready`."""
        request_id = new_request_id()
        try:
            response = await self._http.get("/ready", headers={"X-Request-ID": request_id})
        except httpx.TransportError:
            return False
        if response.status_code == 200:
            return True
        if response.status_code == 503:
            return False
        raise error_from_response(response, request_id, 1)

    async def wait_until_ready(self, timeout_s: float = 300.0, poll_s: float = 0.5) -> None:
        """See :meth:`RewardClient.wait_until_ready`."""
        deadline = time.monotonic() + timeout_s
        while not await self.ready():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.base_url} not ready after {timeout_s:g} s")
            await self._sleep(poll_s)

    async def models(self) -> list[str]:
        """See :meth:`RewardClient.models`."""
        body = await self._request("GET", "/v1/models")
        return [str(card["id"]) for card in body.get("data", [])]

    async def calibration(self, group: str | None = None) -> dict[str, Any]:
        """See :meth:`RewardClient.calibration`."""
        body = await self._request("GET", self._calibration_path(group))
        if not isinstance(body, dict):
            raise RewardServiceError("unexpected calibration answer", type="invalid_response")
        return body

    # -- transport ----------------------------------------------------------------------------

    async def _run(self, plan: Plan[T]) -> list[T]:
        if len(plan.chunks) == 1:
            chunk = plan.chunks[0]
            return plan.parse(await self._request("POST", plan.path, chunk.body), chunk.offset)
        limit = asyncio.Semaphore(self.max_concurrency)

        async def one(offset: int, body: dict[str, Any]) -> list[T]:
            async with limit:
                return plan.parse(await self._request("POST", plan.path, body), offset)

        tasks = [asyncio.ensure_future(one(c.offset, c.body)) for c in plan.chunks]
        try:
            answers = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return plan.merge(answers)

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        """Send with retries on 503 and connection failures; return the decoded JSON."""
        request_id = new_request_id()
        headers = {"X-Request-ID": request_id}
        retry = 0
        while True:
            attempts = retry + 1
            try:
                response = await self._http.request(method, path, json=body, headers=headers)
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
            await self._sleep(delay)
            retry += 1
