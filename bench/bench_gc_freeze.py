"""Full garbage collections in a server process, before and after freezing its start-up heap.

Builds what ``rewardcal serve`` holds once it is up (the app, the default model's artifacts
through the one loader, torch and transformers imported, the LOWESS kernels loaded by a
warm-up fit), then times full collections (``gc.collect()``) with the heap as start-up left
it and after ``rewardcal.api.app.freeze_startup_heap`` (what server processes do once the
model is up). Under a trainer's load, full collections run every few seconds on the event
loop's thread: their length is a pause of every request in flight. Medians of
``--repeats`` collections.

usage: python bench/bench_gc_freeze.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))


def _full_collections(repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import serving  # bench/serving.py: the default model
    import torch  # noqa: F401 - a server process holds it (transformers, the backends)
    from prometheus_client import CollectorRegistry

    from rewardcal.api.app import create_app, freeze_startup_heap
    from rewardcal.calibration.config import StreamConfig
    from rewardcal.calibration.engine import CalibrationEngine
    from rewardcal.config import Settings
    from rewardcal.pipeline.artifacts import load_model_artifacts

    model = serving.resolve_model(None, lambda line: print(line, file=sys.stderr))
    artifacts = load_model_artifacts(model)
    app = create_app(Settings(_env_file=None), model, registry=CollectorRegistry())  # type: ignore[call-arg]
    CalibrationEngine(StreamConfig()).warm_up()
    objects = len(gc.get_objects())
    before = _full_collections(args.repeats)
    freeze_startup_heap()
    after = _full_collections(args.repeats)
    print(f"{objects:,} objects tracked after start-up ({artifacts.path.name}, {app.title})")
    print("| heap | full collection (median) | min-max |")
    print("| --- | ---: | ---: |")
    for name, values in (("as start-up left it", before), ("frozen", after)):
        print(
            f"| {name} | {statistics.median(values) * 1e3:.1f} ms | "
            f"{min(values) * 1e3:.1f}-{max(values) * 1e3:.1f} ms |"
        )
    gc.unfreeze()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
