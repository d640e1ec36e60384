"""Reward model runtimes behind one interface."""

from rewardcal.backends.base import BackendLimits, BackendStartError, RewardBackend
from rewardcal.backends.registry import BACKENDS, available_backends, create_backend

__all__ = [
    "BACKENDS",
    "BackendLimits",
    "BackendStartError",
    "RewardBackend",
    "available_backends",
    "create_backend",
]
