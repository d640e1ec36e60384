"""The GPU check's LOWESS step: many calibration streams refitted on the device.

    python scripts/gpu_lowess.py --device cuda --streams 64 --rows 16384 --json out.json

Each stream is a window of (response length, raw reward) pairs like the ones the service
refits: lengths of the shipped AlpacaEval responses with a +-10% jitter, rewards with a
saturating length bias and heavy-tailed noise, each stream with its own seed. Every stream's
curve (``rewardcal_kernels.lowess_curve``, exact mode, what a refit computes) is fitted by
the numpy backend (its numba window sums: what the service runs) on the host, and by the
torch and Triton backends on ``--device``; the result gives each backend's time for the
whole refit and its largest deviation from the host fit, relative to the rewards' range.

Its own process (gpu_check.py runs it): Triton's CPU interpreter has to be switched on
before triton is first imported, which the check's main process (vLLM imported) is past,
and the check's main process keeps no CUDA context.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BACKENDS = ("torch", "triton")


def stream_windows(streams: int, rows: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``streams`` windows of ``rows`` (length in chars, raw reward) pairs."""
    from rewardcal.datasets import alpacaeval_outputs

    chars = np.array([len(o.output) for o in alpacaeval_outputs()], dtype=np.float64)
    out = []
    for s in range(streams):
        rng = np.random.default_rng(seed + s)
        x = np.maximum(1.0, np.round(chars[rng.integers(0, chars.size, rows)] * np.exp(
            rng.normal(0.0, 0.1, rows)
        )))  # fmt: skip
        y = 0.8 * np.tanh((x - 700.0) / 600.0) + 0.5 * rng.standard_t(4, rows)
        out.append((x, y))
    return out


def refit(
    windows: list[tuple[Any, Any]], frac: float, backend: str, sync: Callable[[], None]
) -> tuple[float, list[np.ndarray]]:
    """Seconds to fit every window's curve, and the curves' values at their distinct x."""
    from rewardcal_kernels import lowess_curve

    started = time.perf_counter()
    curves = [lowess_curve(x, y, frac, 3, "exact", backend=backend).ys for x, y in windows]  # type: ignore[arg-type]
    sync()
    return time.perf_counter() - started, curves


def run(device: str, streams: int, rows: int, frac: float) -> dict[str, Any]:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no CUDA device")
    host = stream_windows(streams, rows)
    on_device = [
        (torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)) for x, y in host
    ]

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    y_range = max(float(np.ptp(y)) for _, y in host)
    result: dict[str, Any] = {
        "device": device,
        "streams": streams,
        "rows_per_stream": rows,
        "frac": frac,
        "it": 3,
        "reference": "numpy backend (numba window sums), host",
        "backends": {},
    }
    # First calls compile (numba, Triton) or initialise the device: timed apart.
    started = time.perf_counter()
    refit(host[:1], frac, "numpy", sync)
    result["numpy_first_call_s"] = round(time.perf_counter() - started, 3)
    seconds, reference = refit(host, frac, "numpy", sync)
    result["numpy_s"] = round(seconds, 4)
    for backend in BACKENDS:
        started = time.perf_counter()
        refit(on_device[:1], frac, backend, sync)
        first = time.perf_counter() - started
        seconds, curves = refit(on_device, frac, backend, sync)
        deviation = max(
            float(np.max(np.abs(got - ref))) for got, ref in zip(curves, reference, strict=True)
        )
        result["backends"][backend] = {
            "seconds": round(seconds, 4),
            "first_call_s": round(first, 3),
            "max_abs_dev": deviation,
            "dev_over_y_range": deviation / y_range,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--rows", type=int, default=16384, help="window of each stream")
    parser.add_argument("--frac", type=float, default=0.3)
    parser.add_argument("--json", type=Path, required=True, help="where the result goes")
    args = parser.parse_args(argv)
    if args.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        parser.error("--device cpu needs TRITON_INTERPRET=1 (Triton's CPU interpreter)")
    result = run(args.device, args.streams, args.rows, args.frac)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
