"""The compiled (numba) window sums: used by default, exact to statsmodels at every span and
tie pattern (see also test_kernels_lowess_exact.py, which runs under both engines), and
equal to the numpy prefix-sum path it replaces."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_data import assert_close, make_data, sm_lowess

import rewardcal_kernels._lowess_numba as lowess_numba
from rewardcal_kernels import lowess, lowess_curve
from rewardcal_kernels.lowess import _problem

FRACS = (0.1, 0.2, 0.3, 0.5, 1.0)


def _numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lowess_numba, "available", lambda: False)


def test_numpy_backend_uses_compiled_sums_in_exact_mode() -> None:
    x, y = make_data("lengths", 2000, seed=1)
    problem, _ = _problem(x, y, 0.3, 3, "exact", False, True)
    assert problem.moments is lowess_numba.numba_moments
    grid, _ = _problem(x, y, 0.3, 3, "grid", False, True)
    assert grid.moments is None  # grid mode keeps its own tuning


def test_too_many_anchors_fall_back_to_numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled plan's memory grows with the anchors; past its cap the numpy path
    (bounded memory) fits, with the same result."""
    x, y = make_data("length_diff", 3000, seed=3)
    got = lowess(x, y, 0.3, 3)
    monkeypatch.setattr(lowess_numba, "MAX_ANCHORS", 100)
    problem, _ = _problem(x, y, 0.3, 3, "exact", False, True)
    assert problem.moments is None
    assert_close(lowess(x, y, 0.3, 3), got, y, rel=1e-11)


def test_compiled_sums_are_called(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = lowess_numba.numba_moments

    def spy(*args: object) -> object:
        calls.append(1)
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(lowess_numba, "numba_moments", spy)
    x, y = make_data("length_diff", 3000, seed=2)
    lowess(x, y, 0.2, 3)
    assert len(calls) == 4  # one per pass: the fit and three robustness passes


@pytest.mark.parametrize("frac", FRACS)
@pytest.mark.parametrize("kind", ["lengths", "length_diff"])
def test_50k_matches_statsmodels_and_numpy_path(
    kind: str, frac: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The benchmark's size and both x patterns: thousands of distinct values, so most
    anchors take the chunked prefix sums and a few the direct re-summation."""
    x, y = make_data(kind, 50_000, seed=50)
    got = lowess(x, y, frac, 3)
    if frac <= 0.2:  # statsmodels takes 1-3 s here; larger spans take longer
        assert_close(got, sm_lowess(x, y, frac, 3), y)
    _numpy_path(monkeypatch)
    assert_close(got, lowess(x, y, frac, 3), y)


@pytest.mark.parametrize("frac", [0.05, 0.3, 1.0])
def test_curve_matches_numpy_path(frac: float, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = make_data("lengths", 5000, seed=9)
    got_c = lowess_curve(x, y, frac, 3)
    assert_close(got_c(x), sm_lowess(x, y, frac, 3), y)
    _numpy_path(monkeypatch)
    ref_c = lowess_curve(x, y, frac, 3)
    np.testing.assert_array_equal(got_c.xs, ref_c.xs)
    assert_close(got_c.ys, ref_c.ys, y)


def test_far_offset_x_keeps_precision() -> None:
    """Prefix sums of x^11 far from 0 would lose every digit: the chunk coordinate and the
    amplification check (re-summing directly) keep the fit exact. Shifting integer x is
    exact, so the fit must not move; statsmodels itself drifts by ~2e-9 of the y range at
    -3e9 (its sums are not centred), hence the comparison with the unshifted reference."""
    x, y = make_data("length_diff", 4000, seed=4)
    ref = sm_lowess(x, y, 0.1, 3)
    for shift in (1e6, -3e9):
        assert_close(lowess(x + shift, y, 0.1, 3), ref, y)


def test_importing_the_service_leaves_numba_unloaded_until_a_compiled_fit() -> None:
    """vLLM's CPU workers scan every loaded module at start-up and fail on llvmlite's
    ctypes wrappers; the workers import the service, so numba loads on first use only."""
    import subprocess
    import sys

    probe = (
        "import sys, numpy as np\n"
        "import rewardcal.api.app, rewardcal.backends.vllm_backend, rewardcal_kernels\n"
        "before = 'llvmlite' in sys.modules\n"
        "x = np.arange(500.0)\n"
        "rewardcal_kernels.lowess(x, np.sin(x / 30), frac=0.3)\n"
        "print(before, 'numba' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.split() == ["False", "True"]
