"""Settings and per-call option resolution shared by the sync and async clients."""

from __future__ import annotations

import os
import random
from typing import Any
from urllib.parse import quote

import httpx

from rewardcal_client._http import DEFAULT_TIMEOUT, RetryPolicy
from rewardcal_client._protocol import DEFAULT_GROUP, check_batch_size
from rewardcal_client._version import __version__

API_KEY_ENV = "REWARDCAL_API_KEY"

TimeoutTypes = float | httpx.Timeout | None


class ClientCore:
    """What both clients hold: where to call, how to authenticate, per-call defaults."""

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
        rng: random.Random | None = None,
    ) -> None:
        if not base_url or "://" not in base_url:
            raise ValueError(f"base_url must be like http://host:8000, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.calibration_group = calibration_group
        self.observe = observe
        self.model = model
        self.batch_size = check_batch_size(batch_size)
        self.retry = retry if retry is not None else RetryPolicy()
        self._timeout: httpx.Timeout = (
            timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        )
        self._rng = rng if rng is not None else random.Random()
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self._api_key = key
        self._headers = {"User-Agent": f"rewardcal-client/{__version__}", **(headers or {})}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"

    def _call_options(
        self,
        calibration_group: str | None,
        observe: bool | None,
        model: str | None,
        batch_size: int | None,
    ) -> dict[str, Any]:
        return {
            "group": calibration_group if calibration_group is not None else self.calibration_group,
            "observe": self.observe if observe is None else observe,
            "model": model if model is not None else self.model,
            "batch_size": self.batch_size if batch_size is None else batch_size,
        }

    def _calibration_path(self, group: str | None) -> str:
        name = group if group is not None else (self.calibration_group or DEFAULT_GROUP)
        return "/v1/calibration/" + quote(name, safe="")

    def __repr__(self) -> str:
        group = self.calibration_group
        return f"{type(self).__name__}({self.base_url!r}, calibration_group={group!r})"
