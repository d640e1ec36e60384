"""A fitted LOWESS curve that can be evaluated at new x and exported as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


def _frozen(values: Any, name: str) -> npt.NDArray[np.float64]:
    arr = np.array(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class LowessCurve:
    """Fitted values ``ys`` at the distinct, sorted x values ``xs`` of a fit.

    Calling the curve evaluates it at new x by linear interpolation between ``xs`` and
    constant extension beyond ``xs[0]`` and ``xs[-1]``: the online calibration evaluates
    the bias estimate at lengths it has not seen, and outside the fitted range a flat
    extension cannot run away the way an extrapolated slope can (statsmodels' ``xvals``
    refits a local line there instead).

    The arrays are read-only copies, so a published curve cannot change under a reader.
    """

    xs: npt.NDArray[np.float64]
    ys: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        xs, ys = _frozen(self.xs, "xs"), _frozen(self.ys, "ys")
        if xs.size == 0:
            raise ValueError("a LowessCurve needs at least one point")
        if xs.shape != ys.shape:
            raise ValueError(f"xs and ys differ in length: {xs.size} != {ys.size}")
        if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
            raise ValueError("xs and ys must be finite")
        if np.any(np.diff(xs) <= 0):
            raise ValueError("xs must be strictly increasing")
        object.__setattr__(self, "xs", xs)
        object.__setattr__(self, "ys", ys)

    def __len__(self) -> int:
        return int(self.xs.size)

    def __call__(self, x_new: Any) -> npt.NDArray[np.float64]:
        """Curve values at ``x_new`` (any shape; NaN stays NaN)."""
        x = np.asarray(x_new, dtype=np.float64)
        return np.interp(x, self.xs, self.ys)

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists (JSON-ready); floats round-trip exactly through ``json``."""
        return {"xs": self.xs.tolist(), "ys": self.ys.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LowessCurve:
        """Inverse of :meth:`to_dict`; validates like the constructor."""
        try:
            xs, ys = data["xs"], data["ys"]
        except (KeyError, TypeError) as exc:
            raise ValueError("a LowessCurve dict needs 'xs' and 'ys' lists") from exc
        return cls(xs=xs, ys=ys)
