"""CPU of one refit with one BLAS thread vs two (rewardcal.calibration.blas).

A 16k-sample window (log-normal lengths, tanh length bias, t(4) noise), the default
calibration config (auto span, it=3); each variant's process CPU and wall time over the
fit, medians of ``--repeats`` runs after a warm-up, each variant in its own block. Refits
back to back (``--gap 0``, how they ran under load before the refit budget) or ``--gap``
seconds apart (idle OpenBLAS threads spin for a while after a job before they sleep, so
their cost depends on the spacing). numpy's OpenBLAS is set to
two threads for the run; the "one thread" variant is fit_window as the service calls it,
the "two threads" variant the same fit with the limit lifted.

usage: python bench/bench_refit_cpu.py [--repeats 7] [--window 16384] [--gap 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from rewardcal.calibration import curve  # noqa: E402
from rewardcal.calibration.config import StreamConfig  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--window", type=int, default=16384)
    parser.add_argument(
        "--gap", type=float, default=0.0, help="seconds between refits (0: back to back)"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.window
    chars = np.round(rng.lognormal(6.5, 0.6, n))
    raw = np.tanh(chars / 1500) + 0.3 * rng.standard_t(4, n)
    features = np.zeros((n, 3))
    features[:, 0] = chars
    config = StreamConfig()
    # fit_window as the service calls it, and the same function without its BLAS limit.
    unlimited = curve.fit_window.__wrapped__  # type: ignore[attr-defined]
    variants = {"one BLAS thread": curve.fit_window, "two BLAS threads": unlimited}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    with threadpool_limits(limits=2, user_api="blas"):
        for name, fit in variants.items():
            fit(config, features, raw)  # warm-up: compile / load the kernels
            time.sleep(1.0)  # the previous block's idle BLAS threads stop spinning
            for _ in range(args.repeats):
                time.sleep(args.gap)
                cpu, wall = time.process_time(), time.perf_counter()
                fit(config, features, raw)
                times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
    print(f"window {n:,}, {args.repeats} refits {args.gap:g} s apart")
    print("| variant | refit CPU (process) | refit wall |")
    print("| --- | ---: | ---: |")
    for name, rows in times.items():
        cpu = statistics.median(r[0] for r in rows) * 1e3
        wall = statistics.median(r[1] for r in rows) * 1e3
        print(f"| {name} | {cpu:.0f} ms | {wall:.0f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
