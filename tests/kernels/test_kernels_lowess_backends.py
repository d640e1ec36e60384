"""torch and Triton backends against the numpy one (and so against statsmodels)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kernel_data import KINDS, assert_close, make_data

from rewardcal_kernels import lowess, lowess_curve

REPO = Path(__file__).resolve().parents[2]
TRITON_CASES = Path(__file__).with_name("triton_cases.py")


@pytest.mark.parametrize("it", [0, 3])
@pytest.mark.parametrize("frac", [0.1, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("n", [50, 3000])
@pytest.mark.parametrize("kind", KINDS)
def test_torch_matches_numpy(kind: str, n: int, frac: float, it: int) -> None:
    x, y = make_data(kind, n, seed=n + 1)
    ref = lowess(x, y, frac, it)
    assert_close(lowess(x, y, frac, it, backend="torch"), ref, y, rel=1e-12)


def test_torch_tensor_inputs_grid_and_nan() -> None:
    x, y = make_data("lengths", 2000, seed=31)  # 1,115 distinct x: grid mode interpolates
    y[5] = np.nan
    xt, yt = torch.tensor(x), torch.tensor(y)
    # Grid mode uses wider prefix-sum chunks (fit errors ~1e-11 of the y range, summed in
    # a different order by each backend); the exact paths agree to ~1e-14.
    ref = lowess(x, y, 0.3, 3, mode="grid")
    assert_close(lowess(xt, yt, 0.3, 3, mode="grid", backend="torch"), ref, y, rel=1e-9)
    assert_close(lowess(xt, yt, 0.3, 3, backend="torch"), lowess(x, y, 0.3, 3), y, rel=1e-12)
    assert np.isnan(lowess(xt, yt, 0.3, backend="torch")[5])
    curve = lowess_curve(xt, yt, 0.3, backend="torch")
    assert_close(curve.ys, lowess_curve(x, y, 0.3).ys, y, rel=1e-12)


@pytest.fixture(scope="module")
def triton_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Triton's interpreter must be on before triton is first imported in a process, so
    the Triton backend runs in a fresh interpreter whatever this session imported."""
    out = tmp_path_factory.mktemp("triton") / "triton.json"
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(TRITON_CASES), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results: dict[str, Any] = json.loads(out.read_text())
    return results


def _triton_case_ids() -> list[str]:
    sys.path.insert(0, str(TRITON_CASES.parent))
    try:
        from triton_cases import CASES
    finally:
        sys.path.pop(0)
    return list(CASES)


@pytest.mark.parametrize("case", _triton_case_ids())
def test_triton_matches_numpy(triton_results: dict[str, Any], case: str) -> None:
    result = triton_results[case]
    got = np.array(result["triton"], dtype=float)
    ref = np.array(result["numpy"], dtype=float)
    rel = 1e-9 if "grid" in case else 1e-12  # see test_torch_tensor_inputs_grid_and_nan
    assert_close(got, ref, np.array(result["y"], dtype=float), rel=rel)


def test_triton_on_cpu_without_interpreter_says_how_to_fix(
    triton_results: dict[str, Any],
) -> None:
    assert "TRITON_INTERPRET=1" in triton_results["error"]
