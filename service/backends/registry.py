"""The backends, by the name ``Settings.backend`` takes: a closed set, a plain mapping."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rewardcal.backends.base import RewardBackend
from rewardcal.backends.remote_backend import RemoteBackend
from rewardcal.backends.transformers_backend import TransformersBackend
from rewardcal.backends.vllm_backend import VllmBackend
from rewardcal.config import Settings

BackendFactory = Callable[[Settings, Path], RewardBackend]


def _transformers(settings: Settings, model_path: Path) -> RewardBackend:
    return TransformersBackend(
        model_path,
        device=settings.device,
        dtype=settings.dtype,
        max_input_tokens=settings.max_input_tokens,
        trust_remote_code=settings.trust_remote_code,
    )


def _vllm(settings: Settings, model_path: Path) -> RewardBackend:
    return VllmBackend(
        model_path,
        dtype=settings.dtype,
        max_input_tokens=settings.max_input_tokens,
        max_model_len=settings.max_model_len,
        tensor_parallel_size=settings.tensor_parallel_size,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        kv_cache_memory_bytes=settings.kv_cache_memory_bytes,
        enforce_eager=settings.enforce_eager,
        trust_remote_code=settings.trust_remote_code,
    )


def _remote(settings: Settings, model_path: Path) -> RewardBackend:
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


BACKENDS: dict[str, BackendFactory] = {
    "transformers": _transformers,
    "vllm": _vllm,  # vllm_backend imports vLLM only in start(): listed without vLLM installed
    "remote": _remote,
}


def create_backend(settings: Settings, model_path: Path) -> RewardBackend:
    try:
        factory = BACKENDS[settings.backend]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise ValueError(f"unknown backend {settings.backend!r} (known: {known})") from None
    return factory(settings, model_path)


def available_backends() -> list[str]:
    return sorted(BACKENDS)
