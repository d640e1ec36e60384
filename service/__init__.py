"""rewardcal: reward-model serving for RLHF with online length-bias calibration."""

__version__ = "0.1.0"
