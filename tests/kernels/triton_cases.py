"""Runs the Triton backend in a fresh process (see test_kernels_lowess_backends.py).

usage: TRITON_INTERPRET=1 triton_cases.py OUT.json

Fits every case with the Triton and numpy backends and writes both, plus the error the
backend raises on CPU tensors once the interpreter is switched off again.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
from kernel_data import make_data

# name -> (kind, n, frac, it, extra keyword arguments); sizes suit the interpreter.
CASES: dict[str, tuple[str, int, float, int, dict[str, Any]]] = {
    **{
        f"continuous-150-{f}-{it}": ("continuous", 150, f, it, {})
        for f, it in ((0.1, 0), (0.1, 3), (0.3, 3), (0.5, 3), (1.0, 0), (1.0, 3))
    },
    **{f"lengths-250-{f}-3": ("lengths", 250, f, 3, {}) for f in (0.3, 1.0)},
    **{
        f"heavy_ties-3000-{f}-{it}": ("heavy_ties", 3000, f, it, {})
        for f in (0.02, 1.0)
        for it in (0, 3)
    },
    # 935 distinct x: more than the grid's anchors, so some values are interpolated.
    "lengths-1500-grid": ("lengths", 1500, 0.5, 3, {"mode": "grid"}),
}


def main(out: str) -> None:
    import os

    from rewardcal_kernels import lowess

    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    results: dict[str, Any] = {}
    for name, (kind, n, frac, it, kwargs) in CASES.items():
        x, y = make_data(kind, n, seed=n)
        y[3] = np.nan
        ref = lowess(x, y, frac, it, **kwargs)
        got = lowess(x, y, frac, it, backend="triton", **kwargs)
        results[name] = {"numpy": ref.tolist(), "triton": got.tolist(), "y": y.tolist()}
    del os.environ["TRITON_INTERPRET"]  # CPU tensors, no interpreter: a clear error
    try:
        lowess(*make_data("continuous", 50), 0.5, backend="triton")
        results["error"] = None
    except RuntimeError as exc:
        results["error"] = str(exc)
    with open(out, "w") as fh:
        json.dump(results, fh)


if __name__ == "__main__":
    main(sys.argv[1])
