"""HTTP surface: thin routes over the runtime built in the lifespan."""

from rewardcal.api.app import create_app

__all__ = ["create_app"]
