"""The paper's AlpacaEval protocol: calibrated reward-model win rates against a baseline.

Huang et al. (2024), ``src/calibrate_alpacaeval.py`` of ZeroYuHuang/Reward-Calibration:
every model's outputs to the AlpacaEval instructions are scored by the reward model; one
LOWESS of score on the feature is fitted over all of them (the paper's setting: response
characters, frac 0.3, it 3); each output and the baseline's output to the same
instruction are looked up on that same fit (``bisect_left`` on the sorted x, see
``protocol.paper_lookup``), and a model's win rate is ``mean(sigmoid(cal - baseline_cal))
x 100`` over its outputs (raw: the same with the raw scores). Features are removed in
sequence, each fitted on the scores the previous ones left.

Methods: ``lowess`` (RC-LWR), ``lowess-penalty`` (RC-LWR-Penalty: ``0.001 x length`` is
subtracted from every score before the fits), ``penalty`` (``margin - 0.001 x (length -
baseline length)``). The length of the penalty is the response's characters, or with
``penalty_length="text"`` the whole templated conversation (the paper's ``text_len_char``).

Departures from the script, on purpose (listed in docs/calibration.md):

- RC-LWR-Penalty: the script subtracts the *output's* templated length from the
  baseline's score too (``base_score - 0.001 * text_len_char``), so the penalty cancels
  in every margin and only moves the fit; here the baseline's score is penalized by its
  own length, as in the script's plain ``penalty`` method and its RewardBench script.
- The pool is every row of the file, the baseline's own outputs included (the script's
  pool is whatever model directories it finds, normally the baseline's as well).
- LOWESS runs with ``delta=0`` (statsmodels' default, as the script) through
  ``rewardcal_kernels.lowess``, statsmodels' answer to rounding.
- RC-Mean is not offered here: the script's windows drop their last sample after a random
  shuffle; see ``protocol`` for the in-sample RC-Mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import kendalltau, spearmanr

from rewardcal.calibration.curve import fit_window
from rewardcal.features import FEATURE_NAMES
from rewardcal.mathutil import sigmoid_each
from rewardcal.offline.io import InputError, Table
from rewardcal.offline.measure import Measure
from rewardcal.offline.protocol import Options, _number, _text

Array = npt.NDArray[np.float64]
DEFAULT_BASELINE = "gpt4_1106_preview"
SCORE_COLUMNS = ("score", "reward")


@dataclass(frozen=True)
class AlpacaOptions:
    """The calibration (:class:`~rewardcal.offline.protocol.Options`; RC-Mean is not
    offered here) and the generator every other one is compared with."""

    options: Options
    baseline: str = DEFAULT_BASELINE

    @property
    def features(self) -> tuple[str, ...]:
        return self.options.features

    @property
    def penalty_length(self) -> str:
        return self.options.penalty_length


@dataclass
class AlpacaData:
    """Rows of model outputs: generator, score, features, and the baseline's row for the
    same instruction (``base``)."""

    generators: list[str]
    scores: Array
    features: dict[str, Array]
    length: Array  # what the penalty is computed on
    base: npt.NDArray[np.int64]
    reference: dict[str, float]


def alpaca_data(
    table: Table,
    source: str,
    alpaca: AlpacaOptions,
    measure: Measure,
    reference_column: str | None = None,
) -> AlpacaData:
    """Read ``generator``, ``instruction`` (or ``index``), ``output`` and ``score``."""
    columns = set(table.columns)
    score_column = next((c for c in SCORE_COLUMNS if c in columns), None)
    missing = [c for c in ("generator", "output") if c not in columns]
    if score_column is None:
        missing.append("score")
    if not columns & {"instruction", "index"}:
        missing.append("instruction (or index)")
    if reference_column is not None and reference_column not in columns:
        missing.append(reference_column)
    if missing:
        raise InputError(f"{source}: the AlpacaEval protocol needs column(s) {', '.join(missing)}")
    assert score_column is not None
    csv_cells = table.fmt == "csv"
    key_column = "index" if "index" in columns else "instruction"
    n = len(table.rows)
    generators: list[str] = []
    keys: list[str] = []
    scores = np.empty(n)
    features = {f: np.empty(n) for f in alpaca.features}
    length = np.empty(n)
    reference: dict[str, float] = {}
    for i, row in enumerate(table.rows):
        number = i + 1
        generator = str(row.get("generator") or "")
        if not generator:
            raise InputError(f"row {number}: missing generator")
        output = _text(row.get("output"), "output", number, csv_cells)
        generators.append(generator)
        keys.append(str(row.get(key_column)))
        scores[i] = _number(row.get(score_column), score_column, number)
        for name in alpaca.features:
            features[name][i] = measure(name, output)
        if alpaca.penalty_length == "text":
            prompt = _text(row.get("instruction"), "instruction", number, csv_cells)
            length[i] = measure.text_chars(prompt, output)
        else:
            length[i] = float(len(output))
        if reference_column is not None and row.get(reference_column) not in (None, ""):
            value = _number(row[reference_column], reference_column, number)
            if reference.setdefault(generator, value) != value:
                raise InputError(
                    f"row {number}: {reference_column} differs between rows of {generator}"
                )
    base_row = {
        k: i for i, (g, k) in enumerate(zip(generators, keys, strict=True)) if g == alpaca.baseline
    }
    if not base_row:
        raise InputError(f"{source}: no rows of the baseline {alpaca.baseline!r} (--baseline)")
    lacking = sorted({k for k in keys if k not in base_row})
    if lacking:
        raise InputError(
            f"{source}: the baseline {alpaca.baseline!r} has no output for "
            f"{len(lacking)} instruction(s), e.g. {lacking[0]!r}"
        )
    base = np.array([base_row[k] for k in keys], dtype=np.int64)
    return AlpacaData(generators, scores, features, length, base, reference)


@dataclass
class AlpacaResult:
    calibrated: Array  # per row, the output's calibrated score
    margins: Array  # raw score - baseline's raw score
    calibrated_margins: Array
    leaderboard: list[dict[str, Any]]
    correlation: dict[str, dict[str, float | None]] | None


def calibrate_alpacaeval(data: AlpacaData, alpaca: AlpacaOptions) -> AlpacaResult:
    config = alpaca.options.config
    score = data.scores.astype(np.float64, copy=True)
    if alpaca.options.penalty_first or config.method == "penalty":
        score = score - config.penalty_coef * data.length
    if config.method == "lowess":
        matrix = np.zeros((score.size, len(FEATURE_NAMES)))
        for name, values in data.features.items():
            matrix[:, FEATURE_NAMES.index(name)] = values
        # One fit over every row; each row (the baseline's too) looked up on it.
        score = fit_window(config, matrix, score).residual
    margins = data.scores - data.scores[data.base]
    calibrated_margins = score - score[data.base]
    board = []
    names = list(dict.fromkeys(data.generators))
    gen = np.asarray(data.generators)
    for name in names:
        rows = gen == name
        board.append(
            {
                "generator": name,
                "outputs": int(rows.sum()),
                "rm_winrate": float(sigmoid_each(margins[rows]).mean() * 100),
                "calibrated_rm_winrate": float(sigmoid_each(calibrated_margins[rows]).mean() * 100),
                "rm_discrete_winrate": float((margins[rows] > 0).mean() * 100),
                "calibrated_rm_discrete_winrate": float(
                    (calibrated_margins[rows] > 0).mean() * 100
                ),
                "reference": data.reference.get(name),
            }
        )
    return AlpacaResult(score, margins, calibrated_margins, board, _correlation(board))


def _correlation(board: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]] | None:
    """Rank correlation of the win rates with the reference column, raw and calibrated."""
    rows = [r for r in board if r["reference"] is not None]
    if not rows:
        return None
    ref = [r["reference"] for r in rows]
    out: dict[str, dict[str, float | None]] = {}
    for kind, key in (("raw", "rm_winrate"), ("calibrated", "calibrated_rm_winrate")):
        values = [r[key] for r in rows]
        if len(rows) < 3:
            out[kind] = {"spearman": None, "kendall": None}
            continue
        out[kind] = {
            "spearman": float(spearmanr(ref, values).statistic),
            "kendall": float(kendalltau(ref, values).statistic),
        }
    return out


def format_alpaca_report(source: str, alpaca: AlpacaOptions, result: AlpacaResult) -> str:
    frac = alpaca.options.config.frac
    lines = [
        f"{source}: AlpacaEval protocol, method {alpaca.options.method}, features "
        f"{', '.join(alpaca.features)}, frac {frac if frac == 'auto' else f'{frac:g}'}, "
        f"baseline {alpaca.baseline}",
        "",
        f"{'generator':<32} {'outputs':>7} {'win rate':>9} {'calibrated':>10} {'reference':>10}",
    ]
    for row in sorted(result.leaderboard, key=lambda r: -r["calibrated_rm_winrate"]):
        ref = "" if row["reference"] is None else f"{row['reference']:g}"
        lines.append(
            f"{row['generator']:<32} {row['outputs']:>7} {row['rm_winrate']:>9.2f} "
            f"{row['calibrated_rm_winrate']:>10.2f} {ref:>10}"
        )
    if result.correlation is not None:
        for kind, values in result.correlation.items():
            s, k = values["spearman"], values["kendall"]
            shown = (
                "n/a (fewer than 3 generators)"
                if s is None
                else f"Spearman {s:+.3f}, Kendall {k:+.3f}"
            )
            lines.append(f"rank correlation with the reference ({kind}): {shown}")
    return "\n".join(lines)
