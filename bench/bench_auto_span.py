"""Refit cost of calibration_frac=auto (span chosen by cross-validation) vs a fixed span.

Times ``rewardcal.calibration.curve.fit_curve`` - a whole refit, as the engine runs it - on
rolling windows of 16k (exact LOWESS) and 256k (grid LOWESS) observations of response
lengths with a saturating length bias, with ``frac="auto"`` (every span of
``rewardcal_kernels.DEFAULT_SPANS`` scored) and with fixed spans 0.3 and 1.0. Medians of runs
interleaved in one process (one thread); the share is of the default refit interval.

usage: python bench/bench_auto_span.py [--repeats 5] [--out bench/results/auto_span.md]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rewardcal.calibration.config import StreamConfig  # noqa: E402
from rewardcal.calibration.curve import fit_curve  # noqa: E402
from rewardcal.features import FEATURE_NAMES  # noqa: E402
from rewardcal_kernels import DEFAULT_SPANS  # noqa: E402


def window(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    chars = np.round(np.exp(rng.normal(np.log(700.0), 0.6, n)))
    raw = np.tanh((chars - 700.0) / 600.0) + 0.7 * rng.standard_t(4, n)
    features = np.zeros((n, len(FEATURE_NAMES)))
    features[:, FEATURE_NAMES.index("chars")] = chars
    return features, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16_384, 262_144])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    interval = StreamConfig().refit_interval_s
    lines = [
        "# Refit cost: calibration_frac=auto vs a fixed span",
        "",
        f"Command: `{shlex.join(['python', *sys.argv])}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs "
        f"(load average at start {os.getloadavg()[0]:.1f}); one thread. Whole refits "
        "(`fit_curve`), medians of "
        f"{args.repeats} interleaved runs after a warm-up. auto scores "
        f"{len(DEFAULT_SPANS)} spans {DEFAULT_SPANS}. Share = median / default refit "
        f"interval ({interval:g} s).",
        "",
        "| window | LOWESS mode | frac | chosen span | refit wall (cpu) | share of interval |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n in args.sizes:
        features, raw = window(n, seed=n)
        configs = {
            frac: StreamConfig(frac=frac, window=max(n, 16), min_samples=2)
            for frac in ("auto", 0.3, 1.0)
        }
        wall: dict[object, list[float]] = {f: [] for f in configs}
        cpu: dict[object, list[float]] = {f: [] for f in configs}
        spans: dict[object, float | None] = {}
        for frac, config in configs.items():
            spans[frac] = fit_curve(config, features, raw, 1).span
        for _ in range(args.repeats):
            for frac, config in configs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                fit_curve(config, features, raw, 1)
                wall[frac].append(time.perf_counter() - start)
                cpu[frac].append(time.process_time() - start_cpu)
        mode = "exact" if n <= 65_536 else "grid"
        for frac in configs:
            w, c = float(np.median(wall[frac])), float(np.median(cpu[frac]))
            lines.append(
                f"| {n:,} | {mode} | {frac} | {spans[frac]} | {w * 1e3:.0f} ms "
                f"({c * 1e3:.0f} ms) | {100 * w / interval:.2f}% |"
            )
            print(lines[-1], flush=True)
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
