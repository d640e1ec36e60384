"""Reward model runtimes behind one interface."""

from service.backends.base import BackendLimits, BackendStartError, RewardBackend
from service.backends.registry import available_backends, create_backend, register_backend

__all__ = [
    "BackendLimits",
    "BackendStartError",
    "RewardBackend",
    "available_backends",
    "create_backend",
    "register_backend",
]
