"""Benchmark rewardcal_kernels.lowess against statsmodels on response-length data (one core).

Measures, on integer lengths drawn log-normal around 300-2000 characters:

* exact mode vs statsmodels with delta=0 at n=50k, at every span in {0.1, 0.2, 0.3, 0.5,
  1.0}, on tie-heavy lengths and on near-continuous length differences (thousands of
  distinct values): median times in one process, their ratio and the largest
  deviation;
* at n=1M (a full rolling window): grid mode (``lowess_curve``, what a refit produces,
  and per-observation ``lowess``), exact mode, and statsmodels with
  delta = 0.01 * range; deviations of grid and statsmodels-delta from the exact fit;
* the torch backend on CPU against the numpy backend's numba window sums (what the service
  runs), exact ``lowess_curve`` (a refit) on windows of 16,384 and 65,536: the torch path
  is the one the GPU check runs on CUDA (scripts/gpu_lowess.py); here it shows what it
  costs where there is no GPU.

Single-threaded: the BLAS/OpenMP thread variables are set before numpy is imported and
torch is told to use one thread.

usage: python bench/bench_lowess.py [--repeats 5] [--quick] [--exact-only] [--fracs 0.1 ...]
                                    [--no-torch] [--out bench/results/lowess.md]
"""

from __future__ import annotations

import os

for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import statsmodels  # noqa: E402
from statsmodels.nonparametric.smoothers_lowess import lowess as sm_lowess  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rewardcal_kernels import lowess, lowess_curve  # noqa: E402


def lengths_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Character lengths (log-normal, median 700, 90% within ~260-1900) and rewards with
    a length bias plus heavy-tailed noise."""
    rng = np.random.default_rng(seed)
    x = np.round(np.exp(rng.normal(np.log(700.0), 0.6, n)))
    y = 0.8 * np.tanh((x - 700.0) / 600.0) + rng.standard_t(4, n)
    return x, y


def length_differences(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Differences of two such lengths (integers, a few thousand distinct values, like the
    length difference of an AlpacaEval pair) and a judge-like preference with a length
    bias plus logistic noise."""
    rng = np.random.default_rng(seed)
    a, b = np.exp(rng.normal(np.log(700.0), 0.6, (2, n)))
    x = np.round(a - b)
    y = np.tanh(x / 1200.0) + rng.logistic(0.0, 0.5, n)
    return x, y


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """Median wall and CPU (process) time of ``repeats`` calls after a warm-up call, and
    the last result. CPU time is the steadier figure when other processes share the
    machine; both are single-threaded."""
    out = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return float(np.median(wall)), float(np.median(cpu)), out


def sm(x: np.ndarray, y: np.ndarray, frac: float, delta: float) -> np.ndarray:
    return np.asarray(sm_lowess(y, x, frac=frac, it=3, delta=delta, return_sorted=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (>= 5)")
    parser.add_argument("--quick", action="store_true", help="small sizes, smoke test only")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument(
        "--fracs",
        type=float,
        nargs="+",
        default=[0.1, 0.2, 0.3, 0.5, 1.0],
        help="spans of the exact comparison",
    )
    parser.add_argument(
        "--exact-only", action="store_true", help="skip the 1M-observation grid section"
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the torch-backend section")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        args.no_torch = True

    n_exact, n_window = (5_000, 100_000) if args.quick else (50_000, 1_000_000)
    reps = args.repeats
    lines = [
        "# LOWESS kernel benchmark",
        "",
        f"Command: `{shlex.join(['python', *sys.argv])}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (one used: BLAS/OpenMP "
        "threads = 1, torch.set_num_threads(1)); numpy "
        f"{np.__version__}, statsmodels {statsmodels.__version__}, Python "
        f"{platform.python_version()}. Times are medians of {reps} runs after a warm-up; "
        "ratios compare medians of the same run (wall; CPU-time ratio in brackets). Data: "
        "integer lengths, log-normal (median 700 chars), rewards with a tanh length bias "
        f"plus t(4) noise; it=3. Load average at start: {os.getloadavg()[0]:.1f}.",
        "",
        f"## Exact mode vs statsmodels (delta=0), n={n_exact:,}, every span",
        "",
        "Tie-heavy: integer lengths as above. Near-continuous: differences of two such "
        "lengths (integers from about -5,000 to 5,000) with a tanh bias plus logistic "
        "noise, like a judge's preference against the length difference of a pair. "
        "Both in one process: per row, a warm-up and "
        f"{3 * reps} kernels runs, then a warm-up and {reps} statsmodels runs; medians.",
        "",
        "| x | frac | distinct x | statsmodels wall (cpu) | kernels exact wall (cpu) | "
        "speed-up wall (cpu) | max abs dev | dev / y range |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    datasets = (
        ("tie-heavy lengths", lengths_data(n_exact, seed=1)),
        ("near-continuous differences", length_differences(n_exact, seed=3)),
    )
    for label, (x, y) in datasets:
        for frac in args.fracs:
            # Blocks, not alternation: right after statsmodels' run the allocator hands
            # back memory that faults in again (kernels then ran ~2x slower in the same
            # process); a block of kernel runs after its own warm-up is how it runs
            # in a service.
            t_k, c_k, got = timed(lambda frac=frac, x=x, y=y: lowess(x, y, frac, 3), 3 * reps)
            t_sm, c_sm, ref = timed(lambda frac=frac, x=x, y=y: sm(x, y, frac, 0.0), reps)
            dev = float(np.max(np.abs(got - ref)))
            lines.append(
                f"| {label} | {frac} | {np.unique(x).size} | {t_sm:.2f} s ({c_sm:.2f} s) | "
                f"{t_k * 1e3:.1f} ms ({c_k * 1e3:.1f} ms) | {t_sm / t_k:.0f}x "
                f"({c_sm / c_k:.0f}x) | {dev:.1e} | {dev / np.ptp(y):.1e} |"
            )
            print(lines[-1], flush=True)
    if args.exact_only:
        report = "\n".join(lines) + "\n"
        print(report)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(report)
        return

    lines += [
        "",
        f"## Refitting a window of n={n_window:,} (grid mode)",
        "",
        "Deviations are from rewardcal_kernels' exact fit (checked against statsmodels above); "
        "grid = default 512 anchors.",
        "",
        "| frac | method | wall (cpu) | vs statsmodels delta | max abs dev from exact | "
        "dev / y range |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    x, y = lengths_data(n_window, seed=2)
    delta = 0.01 * float(np.ptp(x))
    for frac in (1.0, 0.3):
        t_exact, c_exact, exact = timed(lambda frac=frac: lowess(x, y, frac, 3), reps)
        t_curve, c_curve, curve = timed(
            lambda frac=frac: lowess_curve(x, y, frac, 3, mode="grid"), reps
        )
        t_grid, c_grid, grid = timed(lambda frac=frac: lowess(x, y, frac, 3, mode="grid"), reps)
        t_sm, c_sm, sm_delta = timed(lambda frac=frac: sm(x, y, frac, delta), reps)
        rows = [
            ("statsmodels delta=0.01*range", t_sm, c_sm, sm_delta),
            ("kernels exact", t_exact, c_exact, exact),
            ("kernels grid, lowess_curve", t_curve, c_curve, curve(x)),
            ("kernels grid, lowess (per obs)", t_grid, c_grid, grid),
        ]
        for name, t, c, fit in rows:
            dev = float(np.max(np.abs(fit - exact)))
            lines.append(
                f"| {frac} | {name} | {t * 1e3:.0f} ms ({c * 1e3:.0f} ms) | "
                f"{t_sm / t:.0f}x ({c_sm / c:.0f}x) | {dev:.1e} | {dev / np.ptp(y):.1e} |"
            )
            print(lines[-1], flush=True)
    if not args.no_torch:
        lines += torch_section((4_096, 16_384) if args.quick else (16_384, 65_536), reps)

    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


def torch_section(sizes: tuple[int, ...], reps: int) -> list[str]:
    """Exact refits (``lowess_curve``) by the torch backend on CPU vs the numba path."""
    import torch

    lines = [
        "",
        "## torch backend on CPU vs numba (exact refit, one thread)",
        "",
        f"torch {torch.__version__}, float64 tensors on CPU; the numpy backend sums windows "
        "with its numba kernel (what the service runs). Integer lengths as above (seed 4).",
        "",
        "| n | frac | numba wall (cpu) | torch wall (cpu) | torch / numba (wall) | "
        "max abs dev | dev / y range |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in sizes:
        x, y = lengths_data(n, seed=4)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for frac in (0.3, 1.0):
            t_nb, c_nb, ref = timed(lambda frac=frac, x=x, y=y: lowess_curve(x, y, frac, 3), reps)
            t_t, c_t, got = timed(
                lambda frac=frac, xt=xt, yt=yt: lowess_curve(xt, yt, frac, 3, backend="torch"),
                reps,
            )
            dev = float(np.max(np.abs(got.ys - ref.ys)))
            lines.append(
                f"| {n:,} | {frac} | {t_nb * 1e3:.1f} ms ({c_nb * 1e3:.1f} ms) | "
                f"{t_t * 1e3:.1f} ms ({c_t * 1e3:.1f} ms) | {t_t / t_nb:.1f}x | {dev:.1e} | "
                f"{dev / np.ptp(y):.1e} |"
            )
            print(lines[-1], flush=True)
    return lines


if __name__ == "__main__":
    main()
