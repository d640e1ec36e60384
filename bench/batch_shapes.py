"""Batch shapes: what one input costs in a padded batch of B inputs of L tokens.

The batcher's token budget (``max_batch_tokens``, default 2048 on CPU) and its rule of
never batching inputs far apart in length (service/batch_selection.py) rest on this table:
on a CPU, a few hundred tokens are already a sizeable matrix, so batching saves per-pass
overhead only up to a point, and past it a bigger batch costs more per input.

Forward passes of the default model (float32, ``torch.inference_mode``) on random token ids
of exactly L tokens (no padding inside the batch: the cost of a padded batch is that of its
padded shape), each shape timed ``--repeats`` times after a warm-up pass; the figure is the
median wall time per input. Each thread count runs in its own process
(OMP_NUM_THREADS set before torch starts).

usage: python bench/batch_shapes.py [--threads 2,1] [--repeats 5] [--model-path DIR]
           [--quick] [--out bench/results/batch_shapes.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = (32, 64, 128, 256, 512)
SIZES = (1, 2, 4, 8, 16, 32)
MAX_SHAPE_TOKENS = 16384  # the accelerator default budget: the largest batch measured

MEASURE = r"""
import json, statistics, sys, time
import torch
from transformers import AutoModelForSequenceClassification
path, threads, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lengths, sizes, max_tokens = json.loads(sys.argv[4]), json.loads(sys.argv[5]), int(sys.argv[6])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
vocab = model.config.vocab_size
out = {}
with torch.inference_mode():
    for length in lengths:
        for size in sizes:
            if size * length > max_tokens:
                continue
            ids = torch.randint(1000, vocab, (size, length))
            mask = torch.ones_like(ids)
            model(input_ids=ids, attention_mask=mask)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(input_ids=ids, attention_mask=mask)
                times.append(time.perf_counter() - start)
            out[f"{length}x{size}"] = statistics.median(times) / size
print(json.dumps(out))
"""


def measure(model: Path, threads: int, repeats: int, lengths: tuple[int, ...]) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    env["HF_HUB_OFFLINE"] = "1"
    argv = [sys.executable, "-c", MEASURE, str(model), str(threads), str(repeats)]
    argv += [json.dumps(lengths), json.dumps(SIZES), str(MAX_SHAPE_TOKENS)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def render(
    runs: dict[int, dict[str, float]], lengths: tuple[int, ...], meta: dict[str, Any]
) -> str:
    lines = [
        "# Batch shapes: cost per input of a padded batch (CPU)",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; load average {meta['load_start']:.1f} at start, "
        f"{meta['load_end']:.1f} at the end. Model: `{meta['model']}` (float32). "
        f"Median of {meta['repeats']} timed passes per shape after a warm-up; "
        "milliseconds of wall time per input.",
        "",
    ]
    for threads, costs in runs.items():
        lines += [
            f"## {threads} thread(s)",
            "",
            "| tokens per input | " + " | ".join(f"batch {b}" for b in SIZES) + " | best |",
            "| --- |" + " --- |" * (len(SIZES) + 1),
        ]
        for length in lengths:
            cells = []
            measured = {b: costs[f"{length}x{b}"] for b in SIZES if f"{length}x{b}" in costs}
            best = min(measured, key=measured.__getitem__)
            for b in SIZES:
                cells.append(f"{measured[b] * 1e3:.1f}" if b in measured else "-")
            gain = measured[1] / measured[best]
            lines.append(
                f"| {length} | " + " | ".join(cells) + f" | batch {best} ({best * length} "
                f"padded tokens): {gain:.2f}x batch 1 |"
            )
        lines.append("")
    lines += [
        "Reading: the gain of batching is the per-pass overhead it shares, large for short "
        "inputs and small for long ones; past the best shape a batch costs more per input "
        "than a smaller one. Padding is paid at the padded shape's price: an input padded "
        "from 32 to 512 tokens costs what a 512-token input costs.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--threads", default="2,1", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model-path", type=Path, help="default: the embedded default model")
    parser.add_argument("--quick", action="store_true", help="3 repeats, lengths up to 256")
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from rewardcal.config import Settings
    from rewardcal.default_model import ensure_default_model

    model = args.model_path or ensure_default_model(Settings().cache_dir, progress=True)
    repeats = 3 if args.quick else args.repeats
    lengths = LENGTHS[:-1] if args.quick else LENGTHS
    load_start = os.getloadavg()[0]
    runs = {int(t): measure(Path(model), int(t), repeats, lengths) for t in args.threads.split(",")}
    meta = {
        "command": "python " + shlex.join(["bench/batch_shapes.py", *(argv or sys.argv[1:])]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "model": Path(model).name,
        "repeats": repeats,
    }
    report = render(runs, lengths, meta)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
