"""Calibration inside an RL loop: TRL's GRPOTrainer on raw vs calibrated rewards.

A ~115k-parameter Llama policy (``bench/grpo_policy.py``: byte-level BPE of 512 tokens on
the AlpacaEval texts, warm-started to stop at 4-64 tokens) is trained with TRL's real
``GRPOTrainer`` (4 prompts x 8 generations per step, at most 96 completion tokens, lr 1e-3,
beta 0) against the default reward model served by the real app in-process (FastAPI's
``TestClient`` transport under ``RewardClient``), through ``make_trl_reward_func``. One run
per variant and seed, each on its own calibration group; the service refits every 64
samples, on the request path of the reward function (deterministic: the same seed gives the
same curves and the same run).

Per step it records: mean completion length in policy tokens and characters, share at the
token cap, mean raw and calibrated reward, and the within-group (same prompt) Spearman
correlation between length (tokens, characters) and the reward trained on, the raw and the
calibrated reward.

    .venv/bin/python bench/grpo_calibration.py --steps 250 --seeds 0 1 2 \\
        --variants raw calibrated --out bench/results/grpo

writes ``<out>/<variant>-seed<s>.json`` (per-step rows, config, sample completions) and, with
``--summarize``, ``<out>/summary.json`` + ``docs/grpo-calibration.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script from anywhere: the repository's own packages (bench, service) first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS_PER_STEP = 4
GENERATIONS = 8
MAX_COMPLETION = 96
REFIT_EVERY = 64


@dataclass(frozen=True)
class Variant:
    """What the reward function returns and how the service calibrates."""

    name: str
    use_calibrated: bool
    features: tuple[str, ...] = ("chars",)
    window: int = 16384
    half_life: int | None = None
    frac: float = 0.3


VARIANTS = {
    # The first try: characters only, the default window, no recency.
    "chars": Variant("chars", True),
    # Token-aware and recency-weighted (the recommended RL setting, see bench/RESULTS.md).
    "calibrated": Variant("calibrated", True, ("chars", "tokens"), 4096, 512),
    # Faster forgetting (about 4 steps): does a curve that lags less stop over-correcting?
    "calibrated_fast": Variant("calibrated_fast", True, ("chars", "tokens"), 1024, 128),
    "chars_tokens": Variant("chars_tokens", True, ("chars", "tokens")),
    "chars_hl": Variant("chars_hl", True, ("chars",), 4096, 512),
    "tokens_hl": Variant("tokens_hl", True, ("tokens",), 4096, 512),
    # Trains on raw rewards; the group still observes, so calibrated values are recorded.
    "raw": Variant("raw", False, ("chars", "tokens"), 4096, 512),
}


def within_group_spearman(lengths: Sequence[float], rewards: Sequence[float]) -> float:
    """Mean over the step's prompt groups of Spearman(length, reward); groups where either
    is constant have none and are skipped (NaN when no group has one)."""
    from scipy.stats import spearmanr

    values = []
    for g in range(0, len(lengths), GENERATIONS):
        a = np.asarray(lengths[g : g + GENERATIONS], dtype=float)
        b = np.asarray(rewards[g : g + GENERATIONS], dtype=float)
        if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
            continue
        values.append(float(spearmanr(a, b).statistic))
    return float(np.mean(values)) if values else math.nan


@dataclass
class StepRecorder:
    """Wraps the rewardcal reward function: records what each GRPO step scored and refits
    the group every REFIT_EVERY samples (the service's background refit is switched off)."""

    inner: Any
    http: Any
    group: str
    use_calibrated: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    _observed: int = 0
    _since_fit: int = 0

    @property
    def __name__(self) -> str:
        return str(self.inner.__name__)

    def __call__(self, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        captured: list[Any] = []
        score = self.inner.results

        def results(p: Sequence[Any], c: Sequence[Any]) -> Any:
            out = score(p, c)
            captured.extend(out)
            return out

        self.inner.results = results  # the real __call__ (and its TRL logging) runs
        try:
            rewards = self.inner(prompts=prompts, completions=completions, **kwargs)
        finally:
            del self.inner.results
        ids = kwargs.get("completion_ids") or [[] for _ in completions]
        tokens = [float(len(i)) for i in ids]
        chars = [float(len(c)) for c in completions]
        raw = [r.raw_reward for r in captured]
        calibrated = [r.reward for r in captured]
        step = len(self.rows) + 1
        self.rows.append(
            {
                "step": step,
                "tokens": float(np.mean(tokens)),
                "chars": float(np.mean(chars)),
                "at_cap": float(np.mean([t >= MAX_COMPLETION for t in tokens])),
                "raw": float(np.mean(raw)),
                "calibrated": float(np.mean(calibrated)),
                "version": max(r.version or 0 for r in captured),
                "rho_tokens_trained": within_group_spearman(tokens, rewards),
                "rho_chars_trained": within_group_spearman(chars, rewards),
                "rho_tokens_raw": within_group_spearman(tokens, raw),
                "rho_chars_raw": within_group_spearman(chars, raw),
                "rho_tokens_calibrated": within_group_spearman(tokens, calibrated),
                "rho_chars_calibrated": within_group_spearman(chars, calibrated),
            }
        )
        if step == 1 or step % 25 == 0:
            best = int(np.argmax(rewards))
            self.examples.append(
                {
                    "step": step,
                    "completion": completions[best],
                    "tokens": tokens[best],
                    "raw": raw[best],
                    "trained": rewards[best],
                }
            )
        self._observed += len(completions)
        self._since_fit += len(completions)
        if self._observed >= REFIT_EVERY and self._since_fit >= REFIT_EVERY:
            self.http.post(f"/v1/calibration/{self.group}/refit").raise_for_status()
            self._since_fit = 0
        return rewards


class _AppTransport:
    """httpx transport onto the in-process app through its ``TestClient`` (whose own
    transport streams in a form httpx's ``Client`` refuses)."""

    def __init__(self, http: Any) -> None:
        self.http = http

    def handle_request(self, request: Any) -> Any:
        import httpx

        answer = self.http.request(
            request.method,
            request.url.raw_path.decode(),
            content=request.read(),
            headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
        )
        keep = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        }
        return httpx.Response(answer.status_code, headers=keep, content=answer.content)

    def close(self) -> None:
        pass


def _settings(variant: Variant, state_dir: Path) -> Any:
    from rewardcal.config import Settings

    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        calibration_method="lowess",
        calibration_features=list(variant.features),
        calibration_frac=variant.frac,
        calibration_window=variant.window,
        calibration_half_life=variant.half_life,
        calibration_min_samples=REFIT_EVERY,
        # Refits happen on the reward function's path (above); the background one would
        # fit only the first curve, on the same window.
        calibration_refit_every=1_000_000_000,
        calibration_refit_interval_s=1e9,
        calibration_max_groups=8,
        state_dir=state_dir,
    )


def run_one(
    variant: Variant, seed: int, steps: int, policy: Path, prompts: list[str], work: Path
) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rewardcal.api import create_app
    from rewardcal.default_model import ensure_default_model
    from rewardcal_client import RewardClient, make_trl_reward_func

    torch.set_num_threads(1)
    settings = _settings(variant, work / f"state-{variant.name}-{seed}-{os.getpid()}")
    app = create_app(
        settings, ensure_default_model(settings.cache_dir), registry=CollectorRegistry()
    )
    group = f"grpo-{variant.name}-{seed}"
    started = time.perf_counter()
    with TestClient(app) as http:
        while http.get("/ready").status_code != 200:
            time.sleep(0.1)
        http.post(f"/v1/calibration/{group}/reset")
        client = RewardClient(
            "http://testserver",
            calibration_group=group,
            transport=_AppTransport(http),  # type: ignore[arg-type]
        )
        reward_fn = StepRecorder(
            make_trl_reward_func(
                client=client, calibration_group=group, use_calibrated=variant.use_calibrated
            ),
            http,
            group,
            variant.use_calibrated,
        )
        args = GRPOConfig(
            output_dir=str(work / "trl-out"),
            per_device_train_batch_size=PROMPTS_PER_STEP * GENERATIONS,
            num_generations=GENERATIONS,
            max_completion_length=MAX_COMPLETION,
            max_steps=steps,
            learning_rate=1e-3,
            beta=0.0,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            bf16=False,
            seed=seed,
            data_seed=seed,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(policy),
            processing_class=AutoTokenizer.from_pretrained(policy),
            reward_funcs=[reward_fn],
            args=args,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
        )
        trainer.train()
        client.close()
    logged = [h for h in trainer.state.log_history if "rewards/rewardcal_raw/mean" in h]
    for row, log in zip(reward_fn.rows, logged, strict=False):
        # What TRL itself logged (log_history) for the same step.
        row["trl_raw"] = log["rewards/rewardcal_raw/mean"]
        row["trl_trained"] = log["rewards/rewardcal/mean"]
    return {
        "variant": variant.__dict__,
        "seed": seed,
        "steps": steps,
        "seconds": time.perf_counter() - started,
        "rows": reward_fn.rows,
        "examples": reward_fn.examples,
    }


# -- summary -------------------------------------------------------------------------------


def _windows(rows: list[dict[str, Any]], key: str, width: int = 25) -> list[float]:
    values = np.array([r[key] for r in rows], dtype=float)
    return [_nanmean(values[i : i + width]) for i in range(0, values.size, width)]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for run in runs:
        rows = run["rows"]
        first = max(1, len(rows) // 10)
        name = f"{run['variant']['name']}-seed{run['seed']}"
        trained = "calibrated" if run["variant"]["use_calibrated"] else "raw"
        out[name] = {
            "seconds": round(run["seconds"], 1),
            "initial_tokens": float(np.mean([r["tokens"] for r in rows[:first]])),
            "final_tokens": float(np.mean([r["tokens"] for r in rows[-first:]])),
            "final_chars": float(np.mean([r["chars"] for r in rows[-first:]])),
            "final_at_cap": float(np.mean([r["at_cap"] for r in rows[-first:]])),
            "first_step_at_cap_half": next((r["step"] for r in rows if r["at_cap"] >= 0.5), None),
            "rho_tokens_trained_25": _windows(rows, "rho_tokens_trained"),
            "rho_chars_trained_25": _windows(rows, "rho_chars_trained"),
            "rho_tokens_raw_25": _windows(rows, "rho_tokens_raw"),
            "raw_first": float(np.mean([r["raw"] for r in rows[:first]])),
            "raw_last": float(np.mean([r["raw"] for r in rows[-first:]])),
            "trained_on": trained,
        }
    return out


def markdown(summary: dict[str, Any]) -> str:
    """The summary as the table in bench/RESULTS.md."""
    lines = [
        "| run | tokens first 10% -> last 10% | chars last 10% | at cap last 10% | "
        "first step >= 50% at cap | raw reward first -> last | within-group Spearman "
        "(tokens, trained reward) per 25 steps | same, chars |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in summary.items():
        rho_t = " ".join(f"{v:+.2f}" for v in s["rho_tokens_trained_25"])
        rho_c = " ".join(f"{v:+.2f}" for v in s["rho_chars_trained_25"])
        lines.append(
            f"| {name} | {s['initial_tokens']:.1f} -> {s['final_tokens']:.1f} "
            f"({s['final_tokens'] / s['initial_tokens']:.2f}x) | {s['final_chars']:.0f} | "
            f"{s['final_at_cap']:.0%} | {s['first_step_at_cap_half'] or '-'} | "
            f"{s['raw_first']:+.2f} -> {s['raw_last']:+.2f} | {rho_t} | {rho_c} |"
        )
    return "\n".join(lines)


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    from rewardcal.plotting import new_figure

    fig = new_figure(12, 7)
    axes = fig.subplots(2, 2).ravel()
    colors = {"raw": "tab:red", "chars": "tab:orange", "calibrated": "tab:blue"}
    panels = [
        ("tokens", "mean completion length (policy tokens)"),
        ("at_cap", f"share at the {MAX_COMPLETION}-token cap"),
        ("rho_tokens_trained", "within-group Spearman(tokens, reward trained on), last 25 steps"),
        ("raw", "mean raw reward (default reward model)"),
    ]
    for ax, (key, title) in zip(axes, panels, strict=True):
        for run in runs:
            name = run["variant"]["name"]
            values = np.array([r[key] for r in run["rows"]], dtype=float)
            steps = np.arange(1, values.size + 1)
            if key.startswith("rho"):
                # Trailing 25-step mean over the steps that have one (a step whose groups
                # all sit at the cap has no token-length correlation).
                width = min(25, values.size)
                values = np.array(
                    [_nanmean(values[i - width : i]) for i in range(width, values.size + 1)]
                )
                steps = np.arange(width, width + values.size)
            ax.plot(
                steps,
                values,
                color=colors.get(name, "tab:gray"),
                lw=1,
                alpha=0.8,
                label=f"{name} ({len({r['seed'] for r in runs})} seeds)"
                if run["seed"] == runs[0]["seed"]
                else None,
            )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("GRPO step")
        if key.startswith("rho"):
            ax.axhspan(-0.1, 0.1, color="0.9")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    from bench.grpo_policy import ensure_policy

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=250, help="0: only --summarize")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["raw", "calibrated"])
    parser.add_argument("--out", type=Path, default=Path("bench/results/grpo"))
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/rewardcal-grpo"))
    parser.add_argument("--summarize", action="store_true", help="also write summary + plot")
    parser.add_argument("--plot", type=Path, default=Path("docs/grpo-calibration.png"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    policy, prompts = ensure_policy(args.work_dir)
    for seed in args.seeds if args.steps > 0 else []:
        for name in args.variants:
            result = run_one(VARIANTS[name], seed, args.steps, policy, prompts, args.work_dir)
            (args.out / f"{name}-seed{seed}.json").write_text(json.dumps(result, indent=1))
            last = result["rows"][-1]
            print(
                f"{name} seed {seed}: {result['seconds']:.0f} s, last step {last['tokens']:.1f} "
                f"tokens, {last['at_cap']:.0%} at cap",
                flush=True,
            )
    if args.summarize:
        runs = [json.loads(p.read_text()) for p in sorted(args.out.glob("*-seed*.json"))]
        summary = summarize(runs)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(markdown(summary))
        plot(runs, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
