"""Python client of rewardcal: sync and async clients, typed results, trainer integrations.

    from rewardcal_client import RewardClient

    with RewardClient("http://127.0.0.1:8000", calibration_group="run-42") as rm:
        for r in rm.score([("What is 2+2?", "4."), ("Name a prime.", "7 is prime.")]):
            print(r.reward, r.raw_reward, r.bias, r.version, r.status)

Only httpx and pydantic are needed (nothing of the server is imported), so the client
installs cleanly next to a trainer. See docs/client.md.
"""

from rewardcal_client._http import DEFAULT_TIMEOUT, RetryPolicy
from rewardcal_client._version import __version__
from rewardcal_client.async_ import AsyncRewardClient
from rewardcal_client.sync import RewardClient
from rewardcal_client.trainers import (
    TRLRewardFunc,
    VerlComputeScore,
    make_trl_reward_func,
    make_verl_compute_score,
    pooled_client,
)
from rewardcal_client.types import (
    CompareResult,
    RewardConnectionError,
    RewardResult,
    RewardServiceError,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "__version__",
    "AsyncRewardClient",
    "CompareResult",
    "RetryPolicy",
    "RewardClient",
    "RewardConnectionError",
    "RewardResult",
    "RewardServiceError",
    "TRLRewardFunc",
    "VerlComputeScore",
    "make_trl_reward_func",
    "make_verl_compute_score",
    "pooled_client",
]
