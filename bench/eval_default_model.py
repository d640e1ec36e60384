"""Evaluate the built default reward model.

Loads the model from the cache (``rewardcal build-default-model`` builds it), encodes
every input through ``rewardcal.formatting`` exactly as the service does, scores with a plain
transformers forward pass (float32, CPU), and prints:

- pairwise accuracy (r_chosen > r_rejected) on the held-out pairs: overall, per source
  (docstrings, hh-rlhf), per docstring kind, and weighted by the training mix;
- on the 2,415 AlpacaEval responses (prompt = instruction, response = output): the
  Spearman correlation between response characters and reward (the length bias that the
  service's calibration removes), and the mean reward and length per generator.

Usage:
    python bench/eval_default_model.py [--cache-dir ~/.cache/rewardcal] [--max-tokens 512]
        [--json bench/out/default_model_eval.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rewardcal import formatting  # noqa: E402
from rewardcal.datasets import alpacaeval_outputs  # noqa: E402
from rewardcal.default_model import default_model_dir, read_metadata  # noqa: E402
from rewardcal.default_model import pairs as pairs_mod  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/rewardcal"))
    parser.add_argument("--model-dir", type=Path, default=None, help="overrides --cache-dir")
    parser.add_argument(
        "--max-tokens", type=int, default=512, help="truncation length (the service serves 512)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--limit", type=int, default=None, help="smoke test: only the first N of each set"
    )
    args = parser.parse_args(argv)

    import torch
    from scipy.stats import spearmanr
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rewardcal.default_model.train import pairwise_accuracy, score_sequences

    model_dir = args.model_dir or default_model_dir(args.cache_dir.expanduser())
    meta = read_metadata(model_dir)
    if meta is None:
        print(f"no completed default model at {model_dir}: run `rewardcal build-default-model`")
        return 1
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    pad_id = int(tokenizer.pad_token_id)
    progress = not args.no_progress
    report: dict[str, Any] = {
        "model_dir": str(model_dir),
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "seed": meta.get("seed"),
        "build_seconds": meta.get("build_seconds"),
        "train_pairs": meta.get("train_pairs"),
    }

    # Held-out pairs.
    from rewardcal.default_model.train import encode_pairs

    held_out = pairs_mod.select(pairs_mod.load_all_pairs(), split="test")
    if args.limit:
        held_out = [
            p
            for s in sorted({p.source for p in held_out})
            for p in pairs_mod.select(held_out, split="test", source=s)[: args.limit]
        ]
    encoded = encode_pairs(tokenizer, held_out, args.max_tokens)
    accuracy, margins = pairwise_accuracy(model, encoded, pad_id=pad_id, progress=progress)
    groups: dict[str, list[bool]] = defaultdict(list)
    for pair, margin in zip(held_out, margins, strict=True):
        groups[pair.source].append(margin > 0)
        if pair.source == pairs_mod.SOURCE_DOCSTRINGS:
            groups[f"{pair.source}/{pair.kind}"].append(margin > 0)
    per_group = {k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(groups.items())}
    train_counts: dict[str, int] = defaultdict(int)
    for key, count in (meta.get("train_pairs") or {}).items():
        train_counts[key.split("/")[0]] += int(count)
    total_train = sum(train_counts.values())
    weighted = (
        sum(per_group[s]["accuracy"] * n / total_train for s, n in train_counts.items())
        if total_train and all(s in per_group for s in train_counts)
        else None
    )
    report["held_out"] = {
        "n": len(held_out),
        "accuracy_pooled": accuracy,
        "accuracy_training_mix": weighted,
        "training_mix": dict(train_counts),
        "groups": per_group,
    }

    # AlpacaEval responses: length bias.
    rows = alpacaeval_outputs(args.limit)
    texts = [
        formatting.render_messages(tokenizer, formatting.pair_messages(r.instruction, r.output))
        for r in rows
    ]
    ids, full_lengths = formatting.encode(
        tokenizer, texts, max_tokens=args.max_tokens, truncation_side="left"
    )
    rewards = score_sequences(
        model,
        ids,
        pad_id=pad_id,
        batch_size=args.batch_size,
        progress=progress,
        description="alpacaeval",
    )
    chars = [len(r.output) for r in rows]
    rho = float(spearmanr(chars, rewards).statistic)
    by_generator: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_generator[r.generator].append(i)
    generators = {
        g: {
            "n": len(idx),
            "mean_reward": statistics.fmean(rewards[i] for i in idx),
            "median_chars": statistics.median(chars[i] for i in idx),
            "spearman_chars_reward": float(
                spearmanr([chars[i] for i in idx], [rewards[i] for i in idx]).statistic
            ),
        }
        for g, idx in sorted(by_generator.items())
    }
    report["alpacaeval"] = {
        "n": len(rows),
        "truncated": sum(n > args.max_tokens for n in full_lengths),
        "spearman_chars_reward": rho,
        "reward_mean": statistics.fmean(rewards),
        "reward_std": statistics.pstdev(rewards),
        "generators": generators,
    }
    report["eval_seconds"] = round(time.perf_counter() - started, 1)
    print(render(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def render(report: dict[str, Any]) -> str:
    held = report["held_out"]
    lines = [
        f"model: {report['model_dir']} (seed {report['seed']}, "
        f"build {report['build_seconds']} s), max_tokens {report['max_tokens']}",
        "",
        "| held-out pairs | n | accuracy |",
        "| --- | ---: | ---: |",
        f"| all (pooled) | {held['n']} | {held['accuracy_pooled']:.3f} |",
    ]
    if held["accuracy_training_mix"] is not None:
        mix = ", ".join(f"{k} {v}" for k, v in held["training_mix"].items())
        lines.append(
            f"| all, weighted by the training mix ({mix}) | {held['n']} | "
            f"{held['accuracy_training_mix']:.3f} |"
        )
    for name, group in held["groups"].items():
        lines.append(f"| {name} | {group['n']} | {group['accuracy']:.3f} |")
    alpaca = report["alpacaeval"]
    lines += [
        "",
        f"AlpacaEval responses: n={alpaca['n']} ({alpaca['truncated']} truncated), "
        f"Spearman(chars, reward) = {alpaca['spearman_chars_reward']:.3f}, "
        f"reward mean {alpaca['reward_mean']:.3f} sd {alpaca['reward_std']:.3f}",
        "",
        "| generator | n | median chars | mean reward | Spearman(chars, reward) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, g in alpaca["generators"].items():
        lines.append(
            f"| {name} | {g['n']} | {g['median_chars']:.0f} | {g['mean_reward']:.3f} | "
            f"{g['spearman_chars_reward']:.3f} |"
        )
    lines += ["", f"eval time: {report['eval_seconds']} s ({report['threads']} threads)"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
