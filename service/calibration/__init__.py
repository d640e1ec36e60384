"""Online post-hoc reward calibration: streams keyed by (model, group), versioned curves."""

from service.calibration.config import FeatureStep, StreamConfig
from service.calibration.curve import Curve, fit_curve
from service.calibration.engine import DEFAULT_GROUP, CalibrationEngine, validate_group
from service.calibration.persistence import LocalSnapshotStore, SnapshotStore
from service.calibration.stream import CalibrationStatus, CalibrationStream, CurveView

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
