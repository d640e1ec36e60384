"""Backends are chosen from config through this registry, never by if-chains."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rewardcal.backends.base import RewardBackend
from rewardcal.config import Settings

BackendFactory = Callable[[Settings, Path], RewardBackend]

_FACTORIES: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    def decorator(factory: BackendFactory) -> BackendFactory:
        _FACTORIES[name] = factory
        return factory

    return decorator


def create_backend(settings: Settings, model_path: Path) -> RewardBackend:
    _load_builtin_backends()
    try:
        factory = _FACTORIES[settings.backend]
    except KeyError:
        known = ", ".join(sorted(_FACTORIES))
        raise ValueError(f"unknown backend {settings.backend!r} (known: {known})") from None
    return factory(settings, model_path)


def available_backends() -> list[str]:
    _load_builtin_backends()
    return sorted(_FACTORIES)


def _load_builtin_backends() -> None:
    # Imported lazily: importing registers each factory. vllm_backend does not import vLLM
    # itself (only its start() does), so every backend is listed without vLLM installed.
    from rewardcal.backends import (  # noqa: F401
        remote_backend,
        transformers_backend,
        vllm_backend,
    )
