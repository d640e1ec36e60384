"""The GRPO calibration experiment's pieces at small scale: TRL's real GRPOTrainer, the real
app in-process, the reward function's refits and the per-step records (bench/grpo_*.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import grpo_calibration as exp
from bench import grpo_policy


def test_within_group_spearman_skips_constant_groups() -> None:
    lengths = [1, 2, 3, 4, 5, 6, 7, 8] + [5] * 8
    rewards = [0.1 * i for i in range(8)] + list(range(8))
    assert exp.within_group_spearman(lengths, rewards) == pytest.approx(1.0)
    assert math.isnan(exp.within_group_spearman([5] * 8, list(range(8))))


@pytest.mark.slow
def test_three_grpo_steps_record_refit_and_repeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grpo_policy, "WARM_STEPS", 5)
    policy, prompts = grpo_policy.ensure_policy(tmp_path / "work")
    variant = exp.VARIANTS["calibrated"]
    first = exp.run_one(variant, 0, 3, policy, prompts[:8], tmp_path / "a")
    rows = first["rows"]
    assert [r["step"] for r in rows] == [1, 2, 3]
    # The first curve is fitted after 64 samples (two steps of 32), then calibrates.
    assert [r["version"] > 0 for r in rows] == [False, False, True]
    assert rows[2]["calibrated"] != pytest.approx(rows[2]["raw"])
    for row in rows:
        # TRL's own log_history carries the raw reward and the reward trained on.
        assert row["trl_raw"] == pytest.approx(row["raw"], abs=1e-5)
        assert row["trl_trained"] == pytest.approx(row["calibrated"], abs=1e-5)
        assert 0 < row["tokens"] <= exp.MAX_COMPLETION
    again = exp.run_one(variant, 0, 3, policy, prompts[:8], tmp_path / "b")
    # Deterministic given the seed: the same completions, rewards and curves. (The version
    # number may differ by one: the service's background task may fit the first curve on
    # the same window just before the reward function's own refit.)
    strip = [{k: v for k, v in r.items() if k != "version"} for r in rows]
    assert [{k: v for k, v in r.items() if k != "version"} for r in again["rows"]] == strip
