"""Bias drift, shown: a policy that learns that length pays, scored through the service.

Simulated PPO rollouts: at every step two runs send responses to the default reward model
through the service's /v1/rewards. The `drifting` run's responses get longer step by step
(real AlpacaEval answers whose lengths lie in a band that moves from ~200 to ~2,400
characters); the `steady` run draws from one fixed band. After each step the service refits
and the script reads the stream's own figures (GET /v1/calibration/{group}: Spearman of
length and raw / calibrated reward over the window, bias slope), then saves a picture.

    .venv/bin/python bench/drift_demo.py --out docs/drift-demo.png   # a few minutes on CPU

The first run builds the default model (about 3-4 min on 2 cores; cached afterwards).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from rewardcal.api import create_app
from rewardcal.config import Settings
from rewardcal.datasets import alpacaeval_items
from rewardcal.default_model import ensure_default_model
from rewardcal.plotting import new_figure

GROUPS = ("drifting", "steady")


def band(group: str, step: int, steps: int) -> tuple[int, int]:
    """Response-length band (chars) of a run at a step: the drifting one grows geometrically."""
    if group == "steady":
        return 150, 2500
    center = 200 * (12 ** (step / max(1, steps - 1)))  # 200 -> 2,400 chars
    return int(center * 0.6), int(center * 1.4)


def rollout(
    pool: list[dict[str, str]], group: str, step: int, steps: int, n: int, rng: random.Random
) -> list[dict[str, str]]:
    low, high = band(group, step, steps)
    fitting = [item for item in pool if low <= len(item["response"]) <= high]
    return [rng.choice(fitting) for _ in range(n)]


def run(steps: int, per_step: int, seed: int) -> list[dict[str, Any]]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        calibration_window=4 * per_step,  # the last 4 steps: follows the policy
        calibration_min_samples=per_step,
        calibration_refit_every=per_step,
        max_items_per_request=per_step,
        state_dir=Path("/tmp/rewardcal-drift-demo-state"),
    )
    model = ensure_default_model(settings.cache_dir)
    app = create_app(settings, model, registry=CollectorRegistry())
    pool = alpacaeval_items()
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    with TestClient(app) as client:
        while client.get("/ready").status_code != 200:
            time.sleep(0.1)
        for group in GROUPS:  # a clean start on every run of the demo
            client.post(f"/v1/calibration/{group}/reset")
        for step in range(steps):
            started = time.perf_counter()
            for group in GROUPS:
                items = rollout(pool, group, step, steps, per_step, rng)
                body = {"items": items, "calibration_group": group}
                client.post("/v1/rewards", json=body).raise_for_status()
                client.post(f"/v1/calibration/{group}/refit").raise_for_status()
                stats = client.get(f"/v1/calibration/{group}").json()
                rows.append(
                    {
                        "step": step,
                        "group": group,
                        "mean_chars": sum(len(i["response"]) for i in items) / len(items),
                        "spearman_raw": stats["spearman_raw"],
                        "spearman_calibrated": stats["spearman_calibrated"],
                        "slope_per_1k": stats["slope_per_1k"],
                        "version": stats["version"],
                    }
                )
            last = rows[-2]
            print(
                f"step {step:2d}: drifting mean {last['mean_chars']:6.0f} chars, Spearman raw "
                f"{_fmt(last['spearman_raw'])} calibrated {_fmt(last['spearman_calibrated'])}, "
                f"slope {_fmt(last['slope_per_1k'])}/1k chars "
                f"({time.perf_counter() - started:.1f} s)",
                flush=True,
            )
    return rows


def _fmt(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:+.3f}"


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    fig = new_figure(11, 4.2)
    rho_ax, slope_ax = fig.subplots(1, 2)
    colors = {"drifting": "tab:red", "steady": "tab:blue"}
    for group in GROUPS:
        mine = [r for r in rows if r["group"] == group and r["spearman_raw"] is not None]
        steps = [r["step"] for r in mine]
        color = colors[group]
        rho_ax.plot(steps, [r["spearman_raw"] for r in mine], "-o", color=color, ms=3,
                    label=f"{group}: raw")  # fmt: skip
        rho_ax.plot(steps, [r["spearman_calibrated"] for r in mine], "--", color=color,
                    label=f"{group}: calibrated")  # fmt: skip
        slope_ax.plot(steps, [r["slope_per_1k"] for r in mine], "-o", color=color, ms=3,
                      label=group)  # fmt: skip
    rho_ax.axhline(0, color="grey", lw=0.5)
    rho_ax.set(xlabel="PPO step", ylabel="Spearman(length, reward) over the window",
               title="Length-reward correlation")  # fmt: skip
    rho_ax.legend(fontsize=8)
    slope_ax.set(xlabel="PPO step", ylabel="reward per 1,000 chars",
                 title="Bias slope of the current curve")  # fmt: skip
    slope_ax.legend(fontsize=8)
    fig.suptitle(
        "The drifting run's answers grow from ~200 to ~2,400 chars; the steady run's do not"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/drift-demo.png"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--per-step", type=int, default=96, help="responses per run and step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = run(args.steps, args.per_step, args.seed)
    plot(rows, args.out)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
