"""``rewardcal calibrate FILE`` against direct transcriptions of the paper's procedure.

The references here are written independently of ``rewardcal.offline``: statsmodels' LOWESS
with the paper script's ``bisect_left`` lookup, RC-Mean and the length penalty as loops,
and RewardBench's section weighting from its constants typed out again.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr
from statsmodels.nonparametric.smoothers_lowess import lowess as sm_lowess

from rewardcal.cli import main
from rewardcal.features import markdown_count
from rewardcal.offline.protocol import paper_lookup
from rewardcal_kernels import lowess

ROOT = Path(__file__).resolve().parents[1]

# RewardBench v1's weights (rewardbench/constants.py) for the subsets the fixture uses.
WEIGHTS = {
    "alpacaeval-easy": 100,
    "alpacaeval-length": 95,
    "mt-bench-easy": 28,
    "mt-bench-hard": 37,
    "llmbar-natural": 100,
    "llmbar-adver-GPTOut": 47,
    "refusals-offensive": 100,
    "xstest-should-refuse": 250,
    "xstest-should-respond": 154,
    "donotanswer": 136,
    "math-prm": 984,
    "hep-cpp": 164,
    "hep-rust": 164,
    "hep-js": 164,
}
SECTIONS = {
    "Chat": ["alpacaeval-easy", "alpacaeval-length", "mt-bench-easy"],
    "Chat Hard": ["mt-bench-hard", "llmbar-natural", "llmbar-adver-GPTOut"],
    "Safety": [
        "refusals-offensive",
        "xstest-should-refuse",
        "xstest-should-respond",
        "donotanswer",
    ],
    "Reasoning": ["math-prm", "hep-cpp", "hep-rust", "hep-js"],
}
EXTRA_SUBSET = "my-extra-subset"  # in the file, in no section

_FILLER = "abcdefghij klmnopq rstuvw xyz\n"
_MARKDOWN = ["", "**Answer**: ", "# Title\n", "- one\n- two\n", "1. first\n2. second\n**bold** "]


def _text(length: int, rng: np.random.Generator) -> str:
    head = _MARKDOWN[int(rng.integers(len(_MARKDOWN)))]
    body = "".join(rng.choice(list(_FILLER), size=max(length - len(head), 0)))
    return (head + body)[:length] if length >= len(head) else body[:length]


def _rewardbench_rows(seed: int = 7, per_subset: int = 28) -> list[dict[str, Any]]:
    """RewardBench-shaped pairs with a planted length bias.

    reward = quality + 0.9 * log(length) + noise; chosen has the higher quality on
    average, the rejected answer is the longer one about half of the time, and lengths
    come from a small range so that many of them tie.
    """
    rng = np.random.default_rng(seed)
    rows = []
    subsets = [s for names in SECTIONS.values() for s in names] + [EXTRA_SUBSET]
    for subset in subsets:
        for i in range(per_subset):
            length_c, length_r = (int(v) for v in rng.integers(20, 420, size=2))
            quality_c, quality_r = rng.normal(0.8, 1.0), rng.normal(0.0, 1.0)
            score_c = quality_c + 0.9 * np.log(length_c) + rng.normal(0, 0.4)
            score_r = quality_r + 0.9 * np.log(length_r) + rng.normal(0, 0.4)
            rows.append(
                {
                    "id": f"{subset}-{i}",
                    "prompt": f"question {i}",
                    "chosen": _text(length_c, rng),
                    "rejected": _text(length_r, rng),
                    # the leaderboard dumps hold either a float or a one-element list
                    "scores_chosen": [float(score_c)] if i % 3 == 0 else float(score_c),
                    "scores_rejected": float(score_r),
                    "subset": subset,
                }
            )
    return rows


def _score(value: Any) -> float:
    return float(value[0] if isinstance(value, list) else value)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------------------
# Independent references


def reference_lwr(
    c: list[float], r: list[float], frac: float = 1.0, alpha: float = 1.0, center: str = "none"
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's calibrate_score_LWR for one feature: statsmodels + bisect_left."""
    fit = sm_lowess(np.asarray(r), np.asarray(c), frac=frac, it=3, delta=0.0)
    xs = fit[:, 0].tolist()
    b = np.array([fit[bisect.bisect_left(xs, x), 1] for x in c])
    shift = alpha * (b - (b.mean() if center == "mean" else 0.0))
    return np.asarray(r) - shift, b


def reference_rc_mean(
    c_c: list[float],
    c_r: list[float],
    s_c: list[float],
    s_r: list[float],
    ratio: float = 4.0,
    min_n: int = 20,
) -> tuple[list[float], list[float]]:
    """The paper's calibrate_score_mean_reward over the closed window [c - d, c + d]."""
    d = float(np.mean([abs(a - b) for a, b in zip(c_c, c_r, strict=True)])) / ratio
    pool = sorted(zip(c_c + c_r, s_c + s_r, strict=True), key=lambda p: p[0])
    xs = [p[0] for p in pool]
    ys = [p[1] for p in pool]

    def window(x: float) -> list[float]:
        return ys[bisect.bisect_left(xs, x - d) : bisect.bisect_right(xs, x + d)]

    out_c, out_r = [], []
    for a, b, sa, sb in zip(c_c, c_r, s_c, s_r, strict=True):
        wa, wb = window(a), window(b)
        if len(wa) >= min_n and len(wb) >= min_n:
            out_c.append(sa - float(np.mean(wa)))
            out_r.append(sb - float(np.mean(wb)))
        else:
            out_c.append(sa)
            out_r.append(sb)
    return out_c, out_r


def reference_scores(
    subsets: list[str], cal_c: np.ndarray, cal_r: np.ndarray, weights: dict[str, int] = WEIGHTS
) -> dict[str, Any]:
    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    for subset, a, b in zip(subsets, cal_c, cal_r, strict=True):
        total[subset] = total.get(subset, 0) + 1
        correct[subset] = correct.get(subset, 0) + int(a > b)
    accuracy = {s: correct[s] / total[s] for s in total}
    sections = {}
    for section, names in SECTIONS.items():
        num = 0.0
        den = 0
        for name in names:
            num += accuracy[name] * weights[name]
            den += weights[name]
        sections[section] = num / den
    return {
        "correct": correct,
        "accuracy": accuracy,
        "sections": sections,
        "overall": sum(sections.values()) / len(sections),
    }


# ---------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def rb_rows() -> list[dict[str, Any]]:
    return _rewardbench_rows()


@pytest.fixture(scope="module")
def rb_file(tmp_path_factory: pytest.TempPathFactory, rb_rows: list[dict[str, Any]]) -> Path:
    return _write_jsonl(tmp_path_factory.mktemp("rb") / "scores.jsonl", rb_rows)


@pytest.fixture(scope="module")
def rb_reference(rb_rows: list[dict[str, Any]]) -> dict[str, Any]:
    c_c = [float(len(r["chosen"])) for r in rb_rows]
    c_r = [float(len(r["rejected"])) for r in rb_rows]
    s_c = [_score(r["scores_chosen"]) for r in rb_rows]
    s_r = [_score(r["scores_rejected"]) for r in rb_rows]
    n = len(rb_rows)
    calibrated, b = reference_lwr(c_c + c_r, s_c + s_r)
    return {
        "c": c_c + c_r,
        "raw": s_c + s_r,
        "calibrated": calibrated,
        "b": b,
        "subsets": [r["subset"] for r in rb_rows],
        "before": reference_scores(
            [r["subset"] for r in rb_rows if r["subset"] in WEIGHTS],
            *_known(rb_rows, np.array(s_c), np.array(s_r)),
        ),
        "after": reference_scores(
            [r["subset"] for r in rb_rows if r["subset"] in WEIGHTS],
            *_known(rb_rows, calibrated[:n], calibrated[n:]),
        ),
    }


def _known(rows: list[dict[str, Any]], a: np.ndarray, b: np.ndarray) -> tuple[Any, Any]:
    keep = np.array([r["subset"] in WEIGHTS for r in rows])
    return a[keep], b[keep]


@pytest.fixture(scope="module")
def subprocess_run(rb_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out_dir = tmp_path_factory.mktemp("rb-out")
    out, plot, metrics = out_dir / "out.jsonl", out_dir / "curve.png", out_dir / "metrics.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rewardcal.cli",
            "calibrate",
            str(rb_file),
            "--out",
            str(out),
            "--plot",
            str(plot),
            "--json",
            str(metrics),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return {
        "stdout": proc.stdout,
        "out": out,
        "plot": plot,
        "metrics": json.loads(metrics.read_text()),
    }


# ---------------------------------------------------------------------------------------
# RewardBench pairs, RC-LWR (the paper's setting)


def test_pairs_match_statsmodels_and_rewardbench_scoring(
    subprocess_run: dict[str, Any],
    rb_reference: dict[str, Any],
    rb_rows: list[dict[str, Any]],
) -> None:
    n = len(rb_rows)
    rows = _read_jsonl(subprocess_run["out"])
    assert len(rows) == n
    ours = np.array(
        [r["scores_chosen_calibrated"] for r in rows]
        + [r["scores_rejected_calibrated"] for r in rows]
    )
    scale = float(np.ptp(rb_reference["raw"]))
    assert np.max(np.abs(ours - rb_reference["calibrated"])) <= 1e-9 * scale
    bias = np.array([r["bias_chosen"] for r in rows] + [r["bias_rejected"] for r in rows])
    assert np.max(np.abs(bias - rb_reference["b"])) <= 1e-9 * scale
    # in-sample, the bisect_left lookup is the fitted value at each sample's own length
    fitted = lowess(np.array(rb_reference["c"]), np.array(rb_reference["raw"]), frac=1.0, it=3)
    assert np.array_equal(bias, fitted)
    # the original columns are kept, untouched
    assert [r["scores_chosen"] for r in rows] == [r["scores_chosen"] for r in rb_rows]
    assert [r["chars_chosen"] for r in rows] == [len(r["chosen"]) for r in rb_rows]

    metrics = subprocess_run["metrics"]
    by_subset = {s["subset"]: s for s in metrics["subsets"]}
    for when in ("before", "after"):
        ref = rb_reference[when]
        for subset, correct in ref["correct"].items():
            assert by_subset[subset][f"correct_{when}"] == correct
            assert by_subset[subset][f"accuracy_{when}"] == ref["accuracy"][subset]
        for section, score in ref["sections"].items():
            assert metrics["sections"][section][when] == score
        assert metrics["overall"][when] == ref["overall"]
    assert by_subset[EXTRA_SUBSET]["section"] is None  # reported, but in no section
    assert by_subset["math-prm"]["weight"] == 984

    rho_before = spearmanr(rb_reference["c"], rb_reference["raw"]).statistic
    rho_after = spearmanr(rb_reference["c"], rb_reference["calibrated"]).statistic
    assert metrics["spearman"]["chars"]["before"] == pytest.approx(rho_before, abs=1e-12)
    assert metrics["spearman"]["chars"]["after"] == pytest.approx(rho_after, abs=1e-12)
    assert rho_before > 0.3 and abs(rho_after) < 0.1  # the planted bias, then removed

    text = subprocess_run["stdout"]
    for section in SECTIONS:
        assert section in text
    assert "Overall (4)" in text and "Spearman" in text
    png = subprocess_run["plot"].read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_in_process_gzip_json_columns_match_subprocess(
    tmp_path: Path,
    rb_rows: list[dict[str, Any]],
    subprocess_run: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same pairs as a gzipped column-shaped .json (RewardBench's dump shape)."""
    columns = {key: [r[key] for r in rb_rows] for key in rb_rows[0]}
    source = tmp_path / "scores.json.gz"
    with gzip.open(source, "wt", encoding="utf-8") as handle:
        json.dump(columns, handle)
    out, metrics_path = tmp_path / "out.json.gz", tmp_path / "m.json"
    assert main(["calibrate", str(source), "--out", str(out), "--json", str(metrics_path)]) == 0
    assert "Reasoning" in capsys.readouterr().out
    with gzip.open(out, "rt", encoding="utf-8") as handle:
        written = json.load(handle)
    assert isinstance(written, dict)  # written back column-shaped
    expected = _read_jsonl(subprocess_run["out"])
    assert written["scores_chosen_calibrated"] == [r["scores_chosen_calibrated"] for r in expected]
    metrics = json.loads(metrics_path.read_text())
    reference = subprocess_run["metrics"]
    assert metrics["sections"] == reference["sections"]
    assert metrics["spearman"] == reference["spearman"]


def test_center_mean_and_frac(
    tmp_path: Path, rb_file: Path, rb_reference: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.csv"  # JSONL in, CSV out: the format follows --out
    code = main(
        [
            "calibrate",
            str(rb_file),
            "--frac",
            "0.4",
            "--center",
            "mean",
            "--alpha",
            "0.7",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    capsys.readouterr()
    expected, _ = reference_lwr(
        rb_reference["c"], rb_reference["raw"], frac=0.4, alpha=0.7, center="mean"
    )
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    ours = np.array(
        [float(r["scores_chosen_calibrated"]) for r in rows]
        + [float(r["scores_rejected_calibrated"]) for r in rows]
    )
    assert np.max(np.abs(ours - expected)) <= 1e-9 * float(np.ptp(rb_reference["raw"]))
    # center=mean keeps the reward level
    assert ours.mean() == pytest.approx(np.mean(rb_reference["raw"]), abs=1e-3)


def test_rc_mean_matches_transcription(
    tmp_path: Path, rb_file: Path, rb_rows: list[dict[str, Any]]
) -> None:
    metrics_path, out = tmp_path / "m.json", tmp_path / "out.jsonl"
    code = main(
        [
            "calibrate",
            str(rb_file),
            "--method",
            "mean",
            "--min-neighbors",
            "120",
            "--out",
            str(out),
            "--json",
            str(metrics_path),
        ]
    )
    assert code == 0
    c_c = [float(len(r["chosen"])) for r in rb_rows]
    c_r = [float(len(r["rejected"])) for r in rb_rows]
    s_c = [_score(r["scores_chosen"]) for r in rb_rows]
    s_r = [_score(r["scores_rejected"]) for r in rb_rows]
    exp_c, exp_r = reference_rc_mean(c_c, c_r, s_c, s_r, ratio=4.0, min_n=120)
    rows = _read_jsonl(out)
    got_c = [r["scores_chosen_calibrated"] for r in rows]
    got_r = [r["scores_rejected_calibrated"] for r in rows]
    scale = float(np.ptp(s_c + s_r))
    assert np.max(np.abs(np.subtract(got_c, exp_c))) <= 1e-9 * scale
    assert np.max(np.abs(np.subtract(got_r, exp_r))) <= 1e-9 * scale
    unchanged = sum(a == b for a, b in zip(got_c, s_c, strict=True))
    assert 0 < unchanged < len(rows)  # the min-neighbours rule left some pairs alone
    metrics = json.loads(metrics_path.read_text())
    d = float(np.mean(np.abs(np.subtract(c_c, c_r)))) / 4.0
    assert metrics["steps"][0]["radius"] == pytest.approx(d, rel=1e-12)


def test_penalty_on_csv_pairs_is_the_papers_baseline(
    tmp_path: Path, rb_rows: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "pairs.csv"
    keys = list(rb_rows[0])
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(keys)
        for row in rb_rows:
            writer.writerow(
                [json.dumps(row[k]) if isinstance(row[k], list) else row[k] for k in keys]
            )
    out, metrics_path = tmp_path / "out.csv", tmp_path / "m.json"
    assert (
        main(
            [
                "calibrate",
                str(source),
                "--method",
                "penalty",
                "--out",
                str(out),
                "--json",
                str(metrics_path),
            ]
        )
        == 0
    )
    capsys.readouterr()
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["scores_chosen"] for r in rows][:3] == [
        "[" + repr(_score(rb_rows[0]["scores_chosen"])) + "]",
        repr(rb_rows[1]["scores_chosen"]),
        repr(rb_rows[2]["scores_chosen"]),
    ]
    for row, src in zip(rows, rb_rows, strict=True):
        assert float(row["scores_chosen_calibrated"]) == (
            _score(src["scores_chosen"]) - 0.001 * len(src["chosen"])
        )
        assert float(row["scores_rejected_calibrated"]) == (
            _score(src["scores_rejected"]) - 0.001 * len(src["rejected"])
        )
    metrics = json.loads(metrics_path.read_text())
    s_c = np.array([_score(r["scores_chosen"]) - 0.001 * len(r["chosen"]) for r in rb_rows])
    s_r = np.array([_score(r["scores_rejected"]) - 0.001 * len(r["rejected"]) for r in rb_rows])
    ref = reference_scores(*_subset_view(rb_rows, s_c, s_r))
    assert {k: v["after"] for k, v in metrics["sections"].items()} == ref["sections"]


def _subset_view(rows: list[dict[str, Any]], a: np.ndarray, b: np.ndarray) -> tuple[Any, ...]:
    keep = np.array([r["subset"] in WEIGHTS for r in rows])
    return [r["subset"] for r in rows if r["subset"] in WEIGHTS], a[keep], b[keep]


def test_xstest_weights_at_row_counts(
    rb_file: Path, tmp_path: Path, rb_reference: dict[str, Any]
) -> None:
    metrics_path = tmp_path / "m.json"
    assert (
        main(["calibrate", str(rb_file), "--xstest-weights", "rows", "--json", str(metrics_path)])
        == 0
    )
    metrics = json.loads(metrics_path.read_text())
    n = len(rb_reference["subsets"])
    weights = {**WEIGHTS, "xstest-should-refuse": 154, "xstest-should-respond": 250}
    cal = rb_reference["calibrated"]
    keep = np.array([s in WEIGHTS for s in rb_reference["subsets"]])
    subsets = [s for s in rb_reference["subsets"] if s in WEIGHTS]
    ref = reference_scores(subsets, cal[:n][keep], cal[n:][keep], weights)
    assert metrics["sections"]["Safety"]["after"] == ref["sections"]["Safety"]
    assert metrics["sections"]["Chat"]["after"] == ref["sections"]["Chat"]


# ---------------------------------------------------------------------------------------
# Scored samples


def _sample_rows(seed: int = 3) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for group, slope in (("run-a", 0.9), ("run-b", 0.3)):
        for _ in range(220):
            length = int(rng.integers(10, 300))
            text = _text(length, rng)
            reward = rng.normal() + slope * np.log(length) + 0.2 * markdown_count(text)
            rows.append({"response": text, "reward": float(reward), "group": group})
    return rows


def test_scored_samples_jsonl_per_group_two_features(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _sample_rows()
    source = _write_jsonl(tmp_path / "samples.jsonl", rows)
    out, metrics_path = tmp_path / "out.jsonl", tmp_path / "m.json"
    assert (
        main(
            [
                "calibrate",
                str(source),
                "--feature",
                "chars",
                "markdown",
                "--alpha",
                "1",
                "0.5",
                "--out",
                str(out),
                "--json",
                str(metrics_path),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "run-a" in text and "run-b" in text
    written = _read_jsonl(out)
    metrics = json.loads(metrics_path.read_text())
    for group in ("run-a", "run-b"):
        idx = [i for i, r in enumerate(rows) if r["group"] == group]
        chars = [float(len(rows[i]["response"])) for i in idx]
        marks = [float(markdown_count(rows[i]["response"])) for i in idx]
        raw = [rows[i]["reward"] for i in idx]
        step1, _ = reference_lwr(chars, raw)
        expected, _ = reference_lwr(marks, step1.tolist(), alpha=0.5)
        got = np.array([written[i]["reward_calibrated"] for i in idx])
        assert np.max(np.abs(got - expected)) <= 1e-9 * float(np.ptp(raw))
        assert [written[i]["chars"] for i in idx] == [int(c) for c in chars]
        block = next(g for g in metrics["groups"] if g["group"] == group)["spearman"]["chars"]
        assert block["before"] == pytest.approx(spearmanr(chars, raw).statistic, abs=1e-12)
        assert block["after"] == pytest.approx(spearmanr(chars, expected).statistic, abs=1e-12)


def test_scored_samples_csv_with_length_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(11)
    lengths = rng.integers(5, 200, size=300)
    rewards = rng.normal(size=300) + 0.01 * lengths
    source = tmp_path / "samples.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "length", "reward"])
        for i, (length, reward) in enumerate(zip(lengths, rewards, strict=True)):
            writer.writerow([i, int(length), repr(float(reward))])
    out, plot = tmp_path / "out.csv", tmp_path / "plot.png"
    assert main(["calibrate", str(source), "--out", str(out), "--plot", str(plot)]) == 0
    assert "1 group" in capsys.readouterr().out
    expected, b = reference_lwr(lengths.astype(float).tolist(), rewards.tolist())
    with out.open(newline="") as handle:
        written = list(csv.DictReader(handle))
    assert list(written[0]) == ["id", "length", "reward", "reward_calibrated", "bias"]
    got = np.array([float(r["reward_calibrated"]) for r in written])
    assert np.max(np.abs(got - expected)) <= 1e-9 * float(np.ptp(rewards))
    assert np.max(np.abs(np.array([float(r["bias"]) for r in written]) - b)) <= 1e-9
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_paper_lookup_is_bisect_left() -> None:
    x = np.array([5.0, 3.0, 3.0, 9.0, 1.0, 3.0])
    y = np.array([50.0, 30.0, 30.0, 90.0, 10.0, 30.0])
    queries = np.array([3.0, 1.0, 9.0, 4.0, 0.0, 10.0])
    order = np.argsort(x)
    xs, ys = x[order].tolist(), y[order].tolist()
    expected = [ys[min(bisect.bisect_left(xs, q), len(xs) - 1)] for q in queries]
    assert paper_lookup(x, y, queries).tolist() == expected


# ---------------------------------------------------------------------------------------
# Bad input: exit code 2, one line


def _bad(tmp_path: Path, name: str, content: str | None) -> Path:
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("missing.jsonl", None, "no such file"),
        (
            "pairs.jsonl",
            json.dumps({"scores_chosen": 1.0, "scores_rejected": 0.5, "chosen": "a", "subset": "x"})
            + "\n",
            "rejected",
        ),
        ("samples.csv", "reward,group\n1.0,a\n", "length"),
        ("broken.jsonl", '{"reward": 1, "length": 3}\n{"reward": \n', "line 2"),
        ("words.jsonl", json.dumps({"reward": "high", "length": 3}) + "\n", "reward"),
        ("neither.jsonl", json.dumps({"score": 1.0}) + "\n", "reward"),
        ("data.txt", "reward\n1\n", "unknown file type"),
        ("empty.csv", "", "empty CSV"),
        (
            "list.jsonl",
            json.dumps(
                {"scores_chosen": [1, 2], "scores_rejected": 0, "chosen": "a", "rejected": "b"}
            )
            + "\n",
            "one-element",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str | None,
    needle: str,
) -> None:
    path = _bad(tmp_path, name, content)
    assert main(["calibrate", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("rewardcal calibrate: ") and needle in lines[0]
    assert captured.out == ""


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--frac", "1.5"], "frac must be in (0, 1]"),
        (["--alpha", "11"], "features.0.alpha"),
        (["--method", "mean", "--min-neighbors", "0"], "mean_min_neighbors"),
        (["--feature", "chars", "markdown", "--alpha", "1", "2", "3"], "3 alpha(s) for 2"),
    ],
)
def test_options_are_refused_by_the_services_own_rules(
    rb_file: Path, capsys: pytest.CaptureFixture[str], flags: list[str], needle: str
) -> None:
    """The flags build the service's StreamConfig: the same rules, one line, exit 2."""
    assert main(["calibrate", str(rb_file), *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rewardcal calibrate: ")
    assert needle in lines[0]


def test_offline_and_online_calibrate_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A curve the service fits on a window with the offline flags' config calibrates the
    window's rewards as ``rewardcal calibrate`` does: both run the one fit."""
    from rewardcal.calibration import FeatureStep, StreamConfig, fit_curve
    from rewardcal.features import FEATURE_NAMES

    rows = [r for r in _sample_rows() if r["group"] == "run-a"]
    for row in rows:
        del row["group"]
    source, out = _write_jsonl(tmp_path / "s.jsonl", rows), tmp_path / "out.jsonl"
    flags = ["--feature", "chars", "markdown", "--alpha", "1", "0.5", "--frac", "0.6"]
    assert main(["calibrate", str(source), *flags, "--center", "mean", "--out", str(out)]) == 0
    capsys.readouterr()
    features = np.zeros((len(rows), len(FEATURE_NAMES)))
    features[:, 0] = [len(r["response"]) for r in rows]
    features[:, 2] = [markdown_count(r["response"]) for r in rows]
    config = StreamConfig(
        features=(FeatureStep(feature="chars"), FeatureStep(feature="markdown", alpha=0.5)),
        frac=0.6,
        lowess_mode="exact",
        center="mean",
        min_samples=16,
    )
    curve = fit_curve(config, features, np.array([r["reward"] for r in rows]))
    calibrated, _ = curve.apply_arrays(features, np.array([r["reward"] for r in rows]))
    got = [r["reward_calibrated"] for r in _read_jsonl(out)]
    # to rounding: a curve adds its steps' biases up, a fit subtracts them one by one
    np.testing.assert_allclose(got, calibrated, rtol=0, atol=1e-12)
