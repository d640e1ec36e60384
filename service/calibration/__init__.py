"""Online post-hoc reward calibration: streams keyed by (model, group), versioned curves."""

from service.calibration.engine import (
    DEFAULT_GROUP,
    CalibrationEngine,
    CalibrationStatus,
    CurveView,
    validate_group,
)

__all__ = [
    "DEFAULT_GROUP",
    "CalibrationEngine",
    "CalibrationStatus",
    "CurveView",
    "validate_group",
]
