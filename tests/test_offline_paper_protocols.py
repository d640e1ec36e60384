"""The paper's remaining offline protocols, each against a straight transcription of its
script (ZeroYuHuang/Reward-Calibration, ``src/calibrate_alpacaeval.py`` and
``src/calibrate_rewardbench.py``) written here with statsmodels, numpy, bisect and the
script's own regular expressions, not with ``rewardcal.offline``."""

from __future__ import annotations

import bisect
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr
from statsmodels.nonparametric.smoothers_lowess import lowess as sm_lowess

from rewardcal.cli import main
from rewardcal.features import markdown_count
from rewardcal.offline.measure import paper_markdown_count
from tests.test_offline_calibrate import _read_jsonl, _rewardbench_rows, _score, _write_jsonl

GENERATORS = {"gpt4_1106_preview": 1.8, "verbose-7b": 2.6, "terse-7b": 0.6, "mid-13b": 1.2}
REFERENCE = {
    "gpt4_1106_preview": 1250.0,
    "verbose-7b": 1050.0,
    "terse-7b": 1100.0,
    "mid-13b": 1150.0,
}
_WORDS = "the answer is here with some detail # Note\n- item\n1. step\n**key** version 2. Then "


def _alpaca_rows(seed: int = 3, instructions: int = 60) -> list[dict[str, Any]]:
    """Outputs of four generators of different verbosity; the score pays for length."""
    rng = np.random.default_rng(seed)
    rows = []
    for gen, verbosity in GENERATORS.items():
        for i in range(instructions):
            n = int(np.exp(rng.normal(np.log(120 * verbosity), 0.4)))
            start = int(rng.integers(0, len(_WORDS)))
            output = ((_WORDS * (n // len(_WORDS) + 2))[start : start + n]).strip() or "ok"
            quality = rng.normal(REFERENCE[gen] / 1000.0, 0.5)
            rows.append(
                {
                    "generator": gen,
                    "index": i,
                    "instruction": f"instruction number {i}",
                    "output": output,
                    "score": float(quality + 0.8 * np.log(len(output)) + rng.normal(0, 0.3)),
                    "arena": REFERENCE[gen],
                }
            )
    return rows


# --- the paper's code, transcribed ------------------------------------------------------


def _estimate_bias(x_query: np.ndarray, fit: np.ndarray) -> np.ndarray:
    return np.array([fit[bisect.bisect_left(fit[:, 0].tolist(), x), 1] for x in x_query])


def paper_alpaca_leaderboard(
    rows: list[dict[str, Any]],
    frac: float,
    feature: dict[int, float] | None = None,
    method: str = "lwr",
    text_len: list[float] | None = None,
) -> dict[str, tuple[float, float]]:
    """calibrate_score_LWR / calibrate_score_penalty + get_leaderboard of the script:
    per generator (rm-winrate, calibrated-rm-winrate)."""
    base = {r["index"]: j for j, r in enumerate(rows) if r["generator"] == "gpt4_1106_preview"}
    f = np.array([len(r["output"]) if feature is None else feature[j] for j, r in enumerate(rows)])
    score = np.array([r["score"] for r in rows])
    base_idx = np.array([base[r["index"]] for r in rows])
    base_score = score[base_idx]
    base_f = f[base_idx]
    margins = score - base_score
    if method == "penalty":
        tl = np.asarray(text_len)
        calibrated_margins = score - base_score - 0.001 * (tl - tl[base_idx])
    else:
        fit = sm_lowess(score, f, frac=frac)  # the script: default it=3, delta=0
        score_cal = score - 1.0 * _estimate_bias(f, fit)
        base_cal = base_score - 1.0 * _estimate_bias(base_f, fit)
        calibrated_margins = score_cal - base_cal
    out = {}
    for gen in GENERATORS:
        sel = np.array([r["generator"] == gen for r in rows])
        pref = [1 / (1 + np.exp(-m)) for m in margins[sel]]
        cal_pref = [1 / (1 + np.exp(-m)) for m in calibrated_margins[sel]]
        out[gen] = (float(np.mean(pref) * 100), float(np.mean(cal_pref) * 100))
    return out


def paper_count_markdown_elements(text: str) -> int:
    header_pattern = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
    headers = len(header_pattern.findall(text))
    list_pattern = re.compile(r"^\s*[-+*] |\d+\.\s", re.MULTILINE)
    lists = len(list_pattern.findall(text))
    bold_pattern = re.compile(r"\*\*(.*?)\*\*|__(.*?)__")
    bolds = len(bold_pattern.findall(text))
    return headers + lists + bolds


def paper_rewardbench_lwr(
    f_c: list[float],
    f_r: list[float],
    s_c: list[float],
    s_r: list[float],
    frac: float,
    with_penalty: bool = False,
    text_c: list[float] | None = None,
    text_r: list[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """calibrate_score_LWR of the RewardBench script for one feature (alpha 1)."""
    chosen = np.asarray(s_c, dtype=float)
    rejected = np.asarray(s_r, dtype=float)
    if with_penalty:
        chosen = chosen - 0.001 * np.asarray(text_c)
        rejected = rejected - 0.001 * np.asarray(text_r)
    fit = sm_lowess(
        np.concatenate([chosen, rejected]), np.asarray(f_c + f_r, dtype=float), frac=frac
    )
    return chosen - _estimate_bias(np.asarray(f_c), fit), rejected - _estimate_bias(
        np.asarray(f_r), fit
    )


# --- tests -------------------------------------------------------------------------------


def _run(args: list[str]) -> None:
    assert main(["calibrate", *args, "--no-progress"]) == 0


def test_alpacaeval_protocol_reproduces_the_script(tmp_path: Path) -> None:
    rows = _alpaca_rows()
    path = _write_jsonl(tmp_path / "outputs.jsonl", rows)
    out = tmp_path / "m.json"
    _run([str(path), "--protocol", "alpacaeval", "--reference-column", "arena", "--json", str(out)])
    got = {r["generator"]: r for r in json.loads(out.read_text())["leaderboard"]}
    ref = paper_alpaca_leaderboard(rows, frac=0.3)  # the script's .sh: frac 0.3
    for gen, (raw, cal) in ref.items():
        assert got[gen]["rm_winrate"] == pytest.approx(raw, abs=1e-9)
        assert got[gen]["calibrated_rm_winrate"] == pytest.approx(cal, abs=1e-9)
    assert got["gpt4_1106_preview"]["calibrated_rm_winrate"] == pytest.approx(50.0)
    # Calibration moves the verbose model down and the terse one up.
    assert ref["verbose-7b"][1] < ref["verbose-7b"][0] and ref["terse-7b"][1] > ref["terse-7b"][0]
    corr = json.loads(out.read_text())["rank_correlation"]
    names = list(GENERATORS)
    expected = spearmanr([REFERENCE[g] for g in names], [ref[g][1] for g in names]).statistic
    assert corr["calibrated"]["spearman"] == pytest.approx(expected)
    assert corr["calibrated"]["spearman"] > corr["raw"]["spearman"]


def test_alpacaeval_penalty_on_the_templated_text(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    from transformers import AutoTokenizer

    rows = _alpaca_rows(seed=5, instructions=30)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["llama"])
    text_len = [
        len(
            tokenizer.apply_chat_template(
                [
                    {"role": "user", "content": r["instruction"]},
                    {"role": "assistant", "content": r["output"]},
                ],
                tokenize=False,
                add_generation_prompt=False,
            )
        )
        for r in rows
    ]
    assert text_len[0] > len(rows[0]["output"]) + len(rows[0]["instruction"])
    path = _write_jsonl(tmp_path / "outputs.jsonl", rows)
    out = tmp_path / "m.json"
    _run(
        [str(path), "--protocol", "alpacaeval", "--method", "penalty", "--penalty-length",
         "text", "--tokenizer", str(tiny_models["llama"]), "--json", str(out)]
    )  # fmt: skip
    got = {r["generator"]: r for r in json.loads(out.read_text())["leaderboard"]}
    ref = paper_alpaca_leaderboard(rows, frac=0.3, method="penalty", text_len=text_len)
    for gen, (raw, cal) in ref.items():
        assert got[gen]["rm_winrate"] == pytest.approx(raw, abs=1e-9)
        assert got[gen]["calibrated_rm_winrate"] == pytest.approx(cal, abs=1e-9)


def _pairs(rows: list[dict[str, Any]]) -> tuple[list[str], list[str], list[float], list[float]]:
    return (
        [r["chosen"] for r in rows],
        [r["rejected"] for r in rows],
        [_score(r["scores_chosen"]) for r in rows],
        [_score(r["scores_rejected"]) for r in rows],
    )


def _calibrated_pairs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = _read_jsonl(path)
    return (
        np.array([r["scores_chosen_calibrated"] for r in rows]),
        np.array([r["scores_rejected_calibrated"] for r in rows]),
    )


def test_rc_lwr_penalty_on_the_templated_text_reproduces_the_script(
    tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    from transformers import AutoTokenizer

    rows = _rewardbench_rows(per_subset=12)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["llama"])

    def text_len_char(prompt: str, response: str) -> float:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return float(len(tokenizer.apply_chat_template(messages, tokenize=False)))

    c, r, s_c, s_r = _pairs(rows)
    t_c = [text_len_char(row["prompt"], row["chosen"]) for row in rows]
    t_r = [text_len_char(row["prompt"], row["rejected"]) for row in rows]
    f_c, f_r = [float(len(t)) for t in c], [float(len(t)) for t in r]
    ref_c, ref_r = paper_rewardbench_lwr(f_c, f_r, s_c, s_r, 0.5, True, t_c, t_r)
    path = _write_jsonl(tmp_path / "rb.jsonl", rows)
    out = tmp_path / "out.jsonl"
    _run(
        [str(path), "--method", "lowess-penalty", "--frac", "0.5", "--penalty-length", "text",
         "--tokenizer", str(tiny_models["llama"]), "--out", str(out)]
    )  # fmt: skip
    got_c, got_r = _calibrated_pairs(out)
    np.testing.assert_allclose(got_c, ref_c, atol=1e-9)
    np.testing.assert_allclose(got_r, ref_r, atol=1e-9)


def test_tokens_feature_reproduces_the_script(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    rows = _rewardbench_rows(per_subset=12)
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    c, r, s_c, s_r = _pairs(rows)
    # The script's tok_length_fn: len(tokenizer.encode(x)), special tokens included.
    f_c = [float(len(tokenizer.encode(t))) for t in c]
    f_r = [float(len(tokenizer.encode(t))) for t in r]
    ref_c, ref_r = paper_rewardbench_lwr(f_c, f_r, s_c, s_r, 1.0)
    path = _write_jsonl(tmp_path / "rb.jsonl", rows)
    out = tmp_path / "out.jsonl"
    _run(
        [
            str(path),
            "--feature",
            "tokens",
            "--tokenizer",
            str(tiny_models["bert"]),
            "--out",
            str(out),
        ]
    )
    got_c, got_r = _calibrated_pairs(out)
    np.testing.assert_allclose(got_c, ref_c, atol=1e-9)
    np.testing.assert_allclose(got_r, ref_r, atol=1e-9)
    assert [row["tokens_chosen"] for row in _read_jsonl(out)] == f_c


def test_tokens_feature_without_a_tokenizer_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_jsonl(tmp_path / "rb.jsonl", _rewardbench_rows(per_subset=2))
    assert main(["calibrate", str(path), "--feature", "tokens", "--no-progress"]) == 2
    assert "--tokenizer" in capsys.readouterr().err


def test_paper_markdown_patterns_reproduce_the_script(tmp_path: Path) -> None:
    rows = _rewardbench_rows(per_subset=12)
    c, r, s_c, s_r = _pairs(rows)
    f_c = [float(paper_count_markdown_elements(t)) for t in c]
    f_r = [float(paper_count_markdown_elements(t)) for t in r]
    ref_c, ref_r = paper_rewardbench_lwr(f_c, f_r, s_c, s_r, 1.0)
    path = _write_jsonl(tmp_path / "rb.jsonl", rows)
    out = tmp_path / "out.jsonl"
    _run([str(path), "--feature", "markdown", "--markdown-patterns", "paper", "--out", str(out)])
    got_c, got_r = _calibrated_pairs(out)
    np.testing.assert_allclose(got_c, ref_c, atol=1e-9)
    np.testing.assert_allclose(got_r, ref_r, atol=1e-9)


@pytest.mark.parametrize(
    ("text", "paper", "ours"),
    [
        ("Released in version 2. Then it grew.", 1, 0),  # the paper's unanchored "\d+\.\s"
        ("**** empty bold", 1, 0),
        ("# Title\n- a\n1. b\n**c**", 4, 4),
    ],
)
def test_markdown_patterns_differ_where_documented(text: str, paper: int, ours: int) -> None:
    assert paper_markdown_count(text) == paper_count_markdown_elements(text) == paper
    assert markdown_count(text) == ours
