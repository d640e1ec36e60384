"""Reward model runtimes behind one interface."""

from rewardcal.backends.base import BackendLimits, BackendStartError, RewardBackend
from rewardcal.backends.registry import available_backends, create_backend, register_backend

__all__ = [
    "BackendLimits",
    "BackendStartError",
    "RewardBackend",
    "available_backends",
    "create_backend",
    "register_backend",
]
