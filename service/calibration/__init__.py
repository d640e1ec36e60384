"""Online post-hoc reward calibration: streams keyed by (model, group), versioned curves."""

from rewardcal.calibration.config import FeatureStep, StreamConfig
from rewardcal.calibration.curve import Curve, fit_curve
from rewardcal.calibration.engine import DEFAULT_GROUP, CalibrationEngine, validate_group
from rewardcal.calibration.persistence import LocalSnapshotStore, SnapshotStore
from rewardcal.calibration.stream import CalibrationStatus, CalibrationStream, CurveView

__all__ = [
    "DEFAULT_GROUP",
    "CalibrationEngine",
    "CalibrationStatus",
    "CalibrationStream",
    "Curve",
    "CurveView",
    "FeatureStep",
    "LocalSnapshotStore",
    "SnapshotStore",
    "StreamConfig",
    "fit_curve",
    "validate_group",
]
