"""Data and references shared by the kernel tests (not a test module)."""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
from statsmodels.nonparametric.smoothers_lowess import lowess as _sm_lowess

FloatArray = npt.NDArray[np.float64]
KINDS = ("continuous", "lengths", "length_diff", "heavy_ties")


def make_data(kind: str, n: int, seed: int = 0) -> tuple[FloatArray, FloatArray]:
    """Continuous x; integer response lengths (log-normal, many ties); differences of two
    lengths (near-continuous: integers with few ties, like a judge's length difference);
    few distinct x."""
    rng = np.random.default_rng(seed)
    if kind == "continuous":
        x = rng.uniform(0.0, 10.0, n)
        y = np.sin(x) + rng.normal(0.0, 0.5, n)
    elif kind == "lengths":
        x = np.round(np.exp(rng.normal(np.log(700.0), 0.6, n)))
        y = 0.4 * np.log(x) + rng.standard_t(3, n)
    elif kind == "length_diff":
        a, b = np.exp(rng.normal(np.log(700.0), 0.6, (2, n)))
        x = np.round(a - b)
        y = np.tanh(x / 1200.0) + rng.logistic(0.0, 0.5, n)
    elif kind == "heavy_ties":
        x = rng.integers(0, 12, n).astype(np.float64)
        y = 0.1 * x + rng.normal(0.0, 1.0, n)
    else:
        raise ValueError(kind)
    return x, y


def sm_lowess(
    x: FloatArray,
    y: FloatArray,
    frac: float,
    it: int,
    delta: float = 0.0,
    xvals: FloatArray | None = None,
) -> FloatArray:
    """statsmodels with our argument order, in input order, NaN pairs dropped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # its 0/0 on zero-radius windows
        out = _sm_lowess(
            y, x, frac=frac, it=it, delta=delta, xvals=xvals, return_sorted=False, missing="drop"
        )
    return np.asarray(out, dtype=np.float64)


def tolerance(y: FloatArray, rel: float = 1e-9) -> float:
    """``rel`` of the y range, plus a floor of a few ulps of |y| for constant y."""
    finite = y[np.isfinite(y)]
    return rel * float(np.ptp(finite)) + 1e-13 * float(np.max(np.abs(finite)))


def assert_close(got: FloatArray, ref: FloatArray, y: FloatArray, rel: float = 1e-9) -> None:
    assert got.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    err = float(np.max(np.abs(got[ok] - ref[ok]), initial=0.0))
    assert err <= tolerance(y, rel), f"max abs deviation {err:.3e} > {tolerance(y, rel):.3e}"
