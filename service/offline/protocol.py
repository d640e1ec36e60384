"""The paper's in-sample calibration protocol, applied to a whole file at once.

Huang et al. (2024) calibrate RewardBench by pooling the rewards of every chosen and every
rejected response, fitting the bias ``b_hat`` of reward on response length over that pool,
and subtracting each response's own fitted bias (``src/calibrate_rewardbench.py`` of
ZeroYuHuang/Reward-Calibration)::

    calibrated = reward - alpha * (b_hat(c) - center)        # center = 0 in the paper

with several features removed in sequence, each fitted on the rewards the previous ones
left. A file of scored samples is calibrated the same way, one pool per ``group``.

The pool is fitted by the service's own ``rewardcal.calibration.curve.fit_window`` (what
every online refit runs) with a :class:`~rewardcal.calibration.config.StreamConfig` built
from the command's flags: LOWESS in its exact mode (statsmodels' answer, ``delta=0``).

Looking the fit up (RC-LWR)
---------------------------
The paper's script does not read LOWESS's fitted values back in input order: it takes
statsmodels' sorted ``(x, fitted)`` output and, for each response's length ``x``, uses
``fitted[bisect.bisect_left(sorted_x, x)]`` (:func:`paper_lookup`; ``numpy.searchsorted(...,
side="left")`` is ``bisect_left`` for every query at once). ``bisect_left`` lands on the
first entry of the run of equal lengths; in-sample every queried length is in the run, and
LOWESS gives tied x one shared fitted value, so the lookup returns the fitted value at that
very length. That is what the service's curve gives too: it holds one fitted value per
distinct length and returns it exactly at that length (interpolating only between lengths,
which in-sample never happens). ``bisect_right`` would land one past the run: on the next
longer length's fit, and past the end of the array for the longest response (the script's
``IndexError``).

RC-Mean and the penalty
-----------------------
RC-Mean uses ``rewardcal_kernels.rc_mean`` (the mean reward of the pooled samples whose
feature lies in the closed window ``[c - d, c + d]``; see that module for how it differs
from the script's slice), ``d = mean |c_chosen - c_rejected| / ratio`` for pair files and, lacking
pairs, the mean gap between any two samples of the group / ratio (as the online streams
do). As in the paper's script, a pair is calibrated only when both of its windows hold at
least ``min_neighbors`` samples; otherwise both rewards stay as they are. The length
penalty is ``b_hat(c) = coef * c`` (0.001 per character in the paper, whose script measures
the whole templated conversation for it; here ``c`` is the response's characters by
default, the templated conversation with ``penalty_length="text"``).

RC-LWR-Penalty (``method="lowess-penalty"``, the script's ``with_penalty=True``) subtracts
the length penalty from every reward first and then runs RC-LWR on what is left.
``tokens`` and the paper's markdown patterns come from :mod:`rewardcal.offline.measure`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rewardcal.calibration.config import FittedMethod, StreamConfig
from rewardcal.calibration.curve import fit_window
from rewardcal.calibration.estimators import MeanBias
from rewardcal.features import FEATURE_NAMES
from rewardcal.offline.io import InputError, Table, decode_cell, progress
from rewardcal.offline.measure import Measure

Array = npt.NDArray[np.float64]
Method = Literal[FittedMethod, "lowess-penalty"]
Kind = Literal["pairs", "samples"]

# Key of the penalty's length in a pool's feature dict (not a feature of its own).
PENALTY_LENGTH = "_penalty_length"
DEFAULT_GROUP = "default"
PAIR_COLUMNS = ("scores_chosen", "scores_rejected", "chosen", "rejected")
TEXT_COLUMNS = ("text", "response")
LENGTH_COLUMNS = ("chars", "length")
_GIVEN = {"chars": LENGTH_COLUMNS, "tokens": ("tokens",), "markdown": ("markdown",)}


@dataclass(frozen=True)
class Options:
    """How to calibrate a file: the service's own calibration config (the same model, the
    same rules, fitted by the same ``fit_window``), and what only the paper's offline
    protocols have."""

    config: StreamConfig = field(default_factory=lambda: offline_config())
    penalty_first: bool = False  # RC-LWR-Penalty: the length penalty first, then RC-LWR
    penalty_length: Literal["response", "text"] = "response"

    @property
    def method(self) -> Method:
        method = self.config.method
        if method == "none":
            raise ValueError("offline calibration needs a method that fits a curve")
        return "lowess-penalty" if self.penalty_first else method

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(step.feature for step in self.config.features)

    @property
    def alphas(self) -> tuple[float, ...]:
        return tuple(step.alpha for step in self.config.features)


def offline_config(
    method: Method = "lowess",
    features: Sequence[str] = ("chars",),
    alphas: Sequence[float] = (1.0,),
    **knobs: Any,
) -> StreamConfig:
    """The stream config of an offline run: LOWESS exact (statsmodels' answer, as the
    paper's scripts) with the paper's RewardBench span 1.0 unless ``knobs`` say otherwise;
    one alpha for every feature or one each. Raises ValueError (pydantic's
    ValidationError) on a bad combination, with the config's own rules."""
    if len(alphas) == 1:
        alphas = tuple(alphas) * len(features)
    if len(alphas) != len(features):
        raise ValueError(
            f"{len(alphas)} alpha(s) for {len(features)} feature(s); "
            "give one alpha, or one per feature"
        )
    steps = [{"feature": f, "alpha": a} for f, a in zip(features, alphas, strict=True)]
    return StreamConfig.model_validate(
        {
            "method": "lowess" if method == "lowess-penalty" else method,
            "features": steps,
            "frac": 1.0,
            "lowess_mode": "exact",
            **{k: v for k, v in knobs.items() if v is not None},
        }
    )


# ---------------------------------------------------------------------------------------
# Reading the rows


@dataclass
class PairData:
    """A RewardBench-style pair file: raw scores and features of both responses."""

    chosen: Array
    rejected: Array
    subsets: list[str] | None
    features_chosen: dict[str, Array]
    features_rejected: dict[str, Array]

    @property
    def size(self) -> int:
        return int(self.chosen.size)


@dataclass
class SampleData:
    """A file of scored samples: reward, features and calibration group per row."""

    reward: Array
    groups: list[str]
    features: dict[str, Array]
    has_groups: bool

    @property
    def size(self) -> int:
        return int(self.reward.size)


def detect_kind(table: Table, source: str) -> Kind:
    columns = set(table.columns)
    if columns & {"scores_chosen", "scores_rejected"}:
        return "pairs"
    if "reward" in columns:
        return "samples"
    shown = ", ".join(table.columns[:12]) + (", ..." if len(table.columns) > 12 else "")
    raise InputError(
        f"{source}: rows need 'reward' (scored samples) or 'scores_chosen'/'scores_rejected' "
        f"(RewardBench pairs); found columns: {shown or 'none'}"
    )


def _number(value: Any, column: str, row: int) -> float:
    value = decode_cell(value)
    if isinstance(value, list):
        if len(value) != 1:
            raise InputError(f"row {row}: {column} must be a number or a one-element list")
        value = value[0]
    if isinstance(value, bool) or value is None:
        raise InputError(f"row {row}: {column} must be a number, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise InputError(f"row {row}: {column} must be a number, got {value!r}") from None
    else:
        raise InputError(f"row {row}: {column} must be a number, got {type(value).__name__}")
    if not np.isfinite(number):
        raise InputError(f"row {row}: {column} must be finite, got {value!r}")
    return number


def _text(value: Any, column: str, row: int, csv_cells: bool) -> str:
    """A response's text: a string, or the last assistant turn of a list of messages."""
    if csv_cells and isinstance(value, str) and value.lstrip().startswith("[{"):
        decoded = decode_cell(value)
        if isinstance(decoded, list) and all(isinstance(m, dict) for m in decoded):
            value = decoded
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        turns = [m for m in value if m.get("role") == "assistant"] or value
        content = turns[-1].get("content")
        if isinstance(content, str):
            return content
    raise InputError(f"row {row}: {column} must be text (or a list of chat messages)")


def _require(table: Table, source: str, names: Iterable[str], what: str) -> None:
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise InputError(f"{source}: {what} lacks column(s) {', '.join(missing)}")


def _cell(row: dict[str, Any], column: str, number: int) -> Any:
    if column not in row or row[column] is None:
        raise InputError(f"row {number}: missing {column}")
    return row[column]


def pair_data(
    table: Table,
    source: str,
    features: Sequence[str],
    show_progress: bool = False,
    measure: Measure | None = None,
    penalty_length: str = "response",
) -> PairData:
    """Scores, subsets and features of a RewardBench-style pair file.

    With ``penalty_length="text"`` the penalty's length (``PENALTY_LENGTH``) is the
    characters of ``prompt`` and the response under the tokenizer's chat template."""
    _require(table, source, PAIR_COLUMNS, "pair file")
    measure = measure or Measure()
    if penalty_length == "text":
        _require(table, source, ("prompt",), "--penalty-length text")
    csv_cells = table.fmt == "csv"
    n = len(table.rows)
    chosen, rejected = np.empty(n), np.empty(n)
    wanted = ("chars", *[f for f in features if f != "chars"])
    feats_c = {f: np.empty(n) for f in (*wanted, PENALTY_LENGTH)}
    feats_r = {f: np.empty(n) for f in (*wanted, PENALTY_LENGTH)}
    has_subset = "subset" in table.columns
    subsets: list[str] = []
    rows = progress(table.rows, "features", show_progress, unit=" pairs", total=n)
    for i, row in enumerate(rows):
        number = i + 1
        chosen[i] = _number(_cell(row, "scores_chosen", number), "scores_chosen", number)
        rejected[i] = _number(_cell(row, "scores_rejected", number), "scores_rejected", number)
        text_c = _text(_cell(row, "chosen", number), "chosen", number, csv_cells)
        text_r = _text(_cell(row, "rejected", number), "rejected", number, csv_cells)
        for name in wanted:
            feats_c[name][i] = measure(name, text_c)
            feats_r[name][i] = measure(name, text_r)
        if penalty_length == "text":
            prompt = _text(_cell(row, "prompt", number), "prompt", number, csv_cells)
            feats_c[PENALTY_LENGTH][i] = measure.text_chars(prompt, text_c)
            feats_r[PENALTY_LENGTH][i] = measure.text_chars(prompt, text_r)
        else:
            feats_c[PENALTY_LENGTH][i] = len(text_c)
            feats_r[PENALTY_LENGTH][i] = len(text_r)
        if has_subset:
            subset = row.get("subset")
            subsets.append(DEFAULT_GROUP if subset in (None, "") else str(subset))
    return PairData(chosen, rejected, subsets if has_subset else None, feats_c, feats_r)


def sample_data(
    table: Table,
    source: str,
    features: Sequence[str],
    show_progress: bool = False,
    measure: Measure | None = None,
) -> SampleData:
    """Rewards, groups and features of a file of scored samples.

    Length comes from ``chars``, else ``length``, else the characters of ``text`` /
    ``response``; ``markdown`` from a ``markdown`` column, else from the text.
    """
    columns = set(table.columns)
    text_columns = [c for c in TEXT_COLUMNS if c in columns]
    if not (columns & set(LENGTH_COLUMNS)) and not text_columns:
        raise InputError(
            f"{source}: scored samples need a length: a 'length' or 'chars' column, "
            "or the response in 'text' or 'response'"
        )
    if "markdown" in features and "markdown" not in columns and not text_columns:
        raise InputError(
            f"{source}: feature markdown needs a 'markdown' column or the response in "
            "'text' or 'response'"
        )
    measure = measure or Measure()
    csv_cells = table.fmt == "csv"
    n = len(table.rows)
    reward = np.empty(n)
    wanted = ("chars", *[f for f in features if f != "chars"])
    feats = {f: np.empty(n) for f in wanted}
    has_groups = "group" in columns
    groups: list[str] = []
    rows = progress(table.rows, "features", show_progress, unit=" rows", total=n)
    for i, row in enumerate(rows):
        number = i + 1
        reward[i] = _number(_cell(row, "reward", number), "reward", number)
        text: str | None = None
        for name in wanted:
            given = next((c for c in _GIVEN[name] if _present(row.get(c))), None)
            if given is not None:
                feats[name][i] = _number(row[given], given, number)
                continue
            if text is None:
                column = next((c for c in text_columns if row.get(c) is not None), None)
                if column is None:
                    need = "length, chars" if name == "chars" else name
                    raise InputError(f"row {number}: no {need}, text or response to measure")
                text = _text(row[column], column, number, csv_cells)
            feats[name][i] = measure(name, text)
        group = row.get("group") if has_groups else None
        groups.append(DEFAULT_GROUP if group in (None, "") else str(group))
    return SampleData(reward, groups, feats, has_groups)


def _present(value: Any) -> bool:
    return value is not None and value != ""


# ---------------------------------------------------------------------------------------
# Estimating and removing the bias


def paper_lookup(x_fit: Array, y_fit: Array, queries: Array) -> Array:
    """The paper's lookup of a fit: sort the (x, fitted) pairs by x, then for each query
    take the fitted value at ``bisect.bisect_left(sorted_x, query)`` (clamped to the last
    entry past the longest x)."""
    order = np.argsort(x_fit, kind="stable")
    xs, ys = x_fit[order], y_fit[order]
    index = np.searchsorted(xs, queries, side="left")
    return np.asarray(ys[np.minimum(index, xs.size - 1)], dtype=np.float64)


@dataclass
class Step:
    """One feature's removal: ``shift = alpha * (b_hat - center)`` (0 where b_hat is NaN)."""

    feature: str
    alpha: float
    center: float | None
    b_hat: Array  # NaN where there is no estimate (RC-Mean: too few neighbours)
    shift: Array
    radius: float | None = None


@dataclass
class Calibrated:
    """Raw and calibrated rewards of a pool (pairs: chosen then rejected) and its steps."""

    raw: Array
    calibrated: Array
    steps: list[Step] = field(default_factory=list)


def calibrate_pool(
    features: dict[str, Array],
    raw: Array,
    options: Options,
    pairs: int | None = None,
    radius_for: Callable[[str], float] | None = None,
) -> Calibrated:
    """Calibrate one pool, feature after feature, with the service's ``fit_window``.

    ``pairs``: the pool is ``pairs`` chosen rewards followed by as many rejected ones; RC-Mean
    then calibrates a pair only when both of its windows have enough neighbours.
    ``radius_for``: RC-Mean's ``d`` per feature (default: the config's ``mean_radius``,
    else the pool's own spread).
    """
    config = options.config
    penalty_c = features.get(PENALTY_LENGTH, features["chars"])
    matrix = np.zeros((raw.size, len(FEATURE_NAMES)))
    for column, name in enumerate(FEATURE_NAMES):
        if name in features:
            matrix[:, column] = features[name]
    if config.method == "penalty":
        # The penalty's length: the response's characters, or the templated conversation.
        matrix[:, FEATURE_NAMES.index("chars")] = penalty_c
    residual = raw.astype(np.float64, copy=True)
    if options.penalty_first:
        # RC-LWR-Penalty: the penalty first, then RC-LWR on what it leaves.
        residual = residual - config.penalty_coef * penalty_c
    radius = None
    if config.method == "mean" and config.mean_radius is None and radius_for is not None:
        radius = {feature: radius_for(feature) for feature in options.features}
    fit = fit_window(config, matrix, residual, pairs=pairs, mean_radius=radius)
    steps = [
        Step(
            c.feature,
            c.alpha,
            c.center,
            b_hat,
            shift,
            c.estimator.radius if isinstance(c.estimator, MeanBias) else None,
        )
        for c, b_hat, shift in zip(fit.curve.components, fit.b_hat, fit.shifts, strict=True)
    ]
    return Calibrated(raw.astype(np.float64, copy=True), fit.residual, steps)


def calibrate_pairs(data: PairData, options: Options) -> Calibrated:
    """Pool chosen and rejected rewards (chosen first) and calibrate the pool."""
    from rewardcal_kernels import rc_mean_radius

    n = data.size
    pooled = {
        f: np.concatenate([data.features_chosen[f], data.features_rejected[f]])
        for f in data.features_chosen
    }
    raw = np.concatenate([data.chosen, data.rejected])

    def radius_for(feature: str) -> float:
        return rc_mean_radius(
            data.features_chosen[feature],
            data.features_rejected[feature],
            options.config.mean_ratio,
        )

    return calibrate_pool(pooled, raw, options, n, radius_for)


def calibrate_samples(
    data: SampleData, options: Options, show_progress: bool = False
) -> tuple[Calibrated, dict[str, Calibrated], dict[str, npt.NDArray[np.int64]]]:
    """Calibrate each group as its own pool.

    Returns the merged result (rows in file order; a merged step's ``center`` and
    ``radius`` are the group's own when there is one group, else None), the result of
    each group, and each group's row indices.
    """
    rows_of: dict[str, list[int]] = {}
    for row, group in enumerate(data.groups):
        rows_of.setdefault(group, []).append(row)
    names = list(rows_of)
    index = {g: np.asarray(rows, dtype=np.int64) for g, rows in rows_of.items()}
    calibrated = np.empty_like(data.reward)
    steps = [
        Step(f, float(a), None, np.full(data.size, np.nan), np.zeros(data.size))
        for f, a in zip(options.features, options.alphas, strict=True)
    ]
    parts: dict[str, Calibrated] = {}
    for group in progress(names, "fitting", show_progress, unit=" groups"):
        idx = index[group]
        part = calibrate_pool(
            {f: v[idx] for f, v in data.features.items()}, data.reward[idx], options
        )
        parts[group] = part
        calibrated[idx] = part.calibrated
        for merged, step in zip(steps, part.steps, strict=True):
            merged.b_hat[idx] = step.b_hat
            merged.shift[idx] = step.shift
            if len(names) == 1:
                merged.center, merged.radius = step.center, step.radius
    merged_result = Calibrated(data.reward.astype(np.float64, copy=True), calibrated, steps)
    return merged_result, parts, index
