"""``rewardcal calibrate FILE``: the paper's offline (in-sample) calibration of a file.

Input (by extension: ``.jsonl``, ``.csv``, ``.json``, each optionally ``.gz``) is either

- RewardBench-style pairs: ``scores_chosen``, ``scores_rejected`` (a number or a
  one-element list), ``chosen``, ``rejected`` (response text) and ``subset``; or
- scored samples: ``reward`` and a length (``chars`` or ``length``, else the characters of
  ``text`` / ``response``), optionally ``group`` (each group is calibrated on its own); or
- with ``--protocol alpacaeval``, model outputs to AlpacaEval: ``generator``,
  ``instruction`` (or ``index``), ``output``, ``score``; the paper's per-model win rates
  against ``--baseline``, raw and calibrated (``rewardcal.offline.alpacaeval``).

The command prints the length Spearman before/after and, for pairs, RewardBench's section
scores before/after; ``--out`` writes the rows back with calibrated columns added.
Bad input exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np

from rewardcal.calibration.config import (
    CenterName,
    FeatureName,
    FeatureStep,
    FittedMethod,
    StreamConfig,
)
from rewardcal.offline.io import InputError, Table, read_table, table_format, write_table

if TYPE_CHECKING:
    from rewardcal.offline.protocol import Options

EXIT_BAD_INPUT = 2


def _default(knob: str) -> str:
    """The stream config's default of a knob, for the help text."""
    return str(StreamConfig.model_fields[knob].default)


def add_calibrate_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``calibrate`` subcommand to ``rewardcal``'s subparsers."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "calibrate",
        help="calibrate a file of rewards offline (the paper's in-sample protocol)",
        description=(
            "Remove the length bias of a reward model from a file of scores: pool all "
            "responses, fit the bias of reward on length (RC-LWR by default), subtract "
            "each response's fitted bias, and report the length Spearman and, for "
            "RewardBench pair files, the section scores before and after."
        ),
    )
    parser.add_argument(
        "file",
        type=Path,
        metavar="FILE",
        help="scored samples or RewardBench pairs (.jsonl, .csv, .json; .gz ok)",
    )
    parser.add_argument(
        "--method",
        choices=get_args(FittedMethod)[:1] + ("lowess-penalty",) + get_args(FittedMethod)[1:],
        default="lowess",
        help="bias estimate: RC-LWR (LOWESS), RC-LWR-Penalty (the length penalty, then "
        "RC-LWR), RC-Mean, or the length penalty (default: lowess)",
    )
    parser.add_argument(
        "--protocol",
        choices=["in-sample", "alpacaeval"],
        default="in-sample",
        help="in-sample: calibrate the file's own pool (RewardBench pairs, scored samples; "
        "default); alpacaeval: per-model win rates against a baseline",
    )
    parser.add_argument(
        "--baseline",
        default="gpt4_1106_preview",
        help="AlpacaEval: the baseline generator (default: gpt4_1106_preview)",
    )
    parser.add_argument(
        "--reference-column",
        default=None,
        metavar="COLUMN",
        help="AlpacaEval: a per-generator reference (e.g. an Arena score) to rank-correlate "
        "the win rates with",
    )
    parser.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        metavar="DIR",
        help="local tokenizer for the tokens feature and --penalty-length text",
    )
    parser.add_argument(
        "--markdown-patterns",
        choices=["rewardcal", "paper"],
        default="rewardcal",
        help="markdown feature: rewardcal's patterns (the service's; default) or the paper's",
    )
    parser.add_argument(
        "--penalty-length",
        choices=["response", "text"],
        default="response",
        help="length the penalty uses: the response's characters (default) or the whole "
        "conversation under the tokenizer's chat template (the paper's text_len_char)",
    )
    parser.add_argument(
        "--feature",
        nargs="+",
        choices=get_args(FeatureName),
        default=["chars"],
        metavar="{" + ",".join(get_args(FeatureName)) + "}",
        help="characteristic(s) to remove, in sequence (default: chars)",
    )
    parser.add_argument(
        "--alpha",
        nargs="+",
        type=float,
        default=[FeatureStep.model_fields["alpha"].default],
        help="strength of removal: one value, or one per feature (default: 1.0)",
    )
    parser.add_argument(
        "--frac",
        type=float,
        default=None,
        help="LOWESS span (default: 1.0, the paper's RewardBench setting; 0.3 with "
        "--protocol alpacaeval, its AlpacaEval setting)",
    )
    parser.add_argument(
        "--it", type=int, help=f"LOWESS robustness iterations (default: {_default('it')})"
    )
    parser.add_argument(
        "--center",
        choices=get_args(CenterName),
        help="none: subtract b_hat itself, as the paper (default); mean: "
        "subtract b_hat minus its mean, keeping the reward level",
    )
    parser.add_argument(
        "--ratio",
        type=float,
        help="RC-Mean: d = mean |c_chosen - c_rejected| / ratio "
        f"(default: {_default('mean_ratio')})",
    )
    parser.add_argument(
        "--min-neighbors",
        type=int,
        help="RC-Mean: fewest samples in a window to calibrate "
        f"(default: {_default('mean_min_neighbors')})",
    )
    parser.add_argument(
        "--radius",
        type=float,
        help="RC-Mean: window half-width d (default: from the data)",
    )
    parser.add_argument(
        "--coef",
        type=float,
        help=f"length penalty per unit of the feature (default: {_default('penalty_coef')})",
    )
    parser.add_argument(
        "--xstest-weights",
        choices=["rewardbench", "rows"],
        default="rewardbench",
        help="Safety weights of the two XSTest subsets: RewardBench's table "
        "(refuse 250, respond 154; default) or their row counts (154, 250)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the rows with calibrated columns added (format by extension, else the input's)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PATH",
        help="write a PNG of reward vs length, raw and calibrated",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        dest="json_path",
        metavar="PATH",
        help="write the metrics as JSON (full precision)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: when stderr is a terminal)",
    )
    parser.set_defaults(func=cmd_calibrate)
    return parser


def cmd_calibrate(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except InputError as exc:
        print(f"rewardcal calibrate: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _run(args: argparse.Namespace) -> int:
    from rewardcal.offline.measure import Measure
    from rewardcal.offline.protocol import (
        calibrate_pairs,
        calibrate_samples,
        detect_kind,
        pair_data,
        sample_data,
    )
    from rewardcal.offline.report import format_report, pair_metrics, sample_metrics

    measure = Measure(args.markdown_patterns, args.tokenizer)
    options = _options(args, default_frac=0.3 if args.protocol == "alpacaeval" else 1.0)
    if args.protocol == "alpacaeval":
        return _run_alpacaeval(args, options, measure)
    features = options.features
    show = sys.stderr.isatty() if args.progress is None else bool(args.progress)
    path: Path = args.file
    source = str(path)
    table = read_table(path, show_progress=show)
    kind = detect_kind(table, source)
    if kind == "pairs":
        pairs = pair_data(table, source, features, show, measure, args.penalty_length)
        result = calibrate_pairs(pairs, options)
        metrics = pair_metrics(source, pairs, result, options, args.xstest_weights)
        if args.out is not None:
            _add_pair_columns(
                table, pairs.features_chosen, pairs.features_rejected, result, features
            )
        c0 = np.concatenate(
            [pairs.features_chosen[features[0]], pairs.features_rejected[features[0]]]
        )
        curves = {"pool": np.arange(2 * pairs.size, dtype=np.int64)}
    else:
        if args.penalty_length == "text":
            raise InputError("--penalty-length text needs a pair file (prompt column)")
        samples = sample_data(table, source, features, show, measure)
        result, parts, index = calibrate_samples(samples, options, show)
        metrics = sample_metrics(source, samples, result, parts, index, options)
        if args.out is not None:
            _add_sample_columns(table, samples.features, result, features)
        c0 = samples.features[features[0]]
        curves = index

    print(format_report(metrics))
    if args.out is not None:
        write_table(args.out, table, table_format(args.out), show)
        print(f"\nwrote {args.out}")
    if args.plot is not None:
        from rewardcal.offline.plot import write_plot

        first = metrics["spearman"].get(features[0], {"before": None, "after": None})
        write_plot(
            args.plot,
            f"{path.name}: {args.method}, feature {features[0]}",
            features[0],
            c0,
            result.raw,
            result.calibrated,
            result.steps[0].b_hat,
            curves,
            first["before"],
            first["after"],
        )
        print(f"wrote {args.plot}")
    if args.json_path is not None:
        try:
            args.json_path.parent.mkdir(parents=True, exist_ok=True)
            args.json_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{args.json_path}: cannot write: {exc}") from None
        print(f"wrote {args.json_path}")
    return 0


def _options(args: argparse.Namespace, default_frac: float) -> Options:
    """The flags as a stream config (the service's rules refuse bad values), plus what
    only the offline protocols have. Flags left out take the config's defaults, except
    the span: the paper's setting of the protocol (``default_frac``)."""
    from pydantic import ValidationError

    from rewardcal.offline.protocol import Options, offline_config

    try:
        config = offline_config(
            args.method,
            args.feature,
            args.alpha,
            frac=default_frac if args.frac is None else args.frac,
            it=args.it,
            center=args.center,
            mean_ratio=args.ratio,
            mean_min_neighbors=args.min_neighbors,
            mean_radius=args.radius,
            penalty_coef=args.coef,
        )
    except ValidationError as exc:
        raise InputError(f"invalid options: {_one_line(exc)}") from None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return Options(config, args.method == "lowess-penalty", args.penalty_length)


def _one_line(error: Any) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item.get("loc", ()))
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)


def _run_alpacaeval(args: argparse.Namespace, options: Options, measure: Any) -> int:
    from rewardcal.offline.alpacaeval import (
        AlpacaOptions,
        alpaca_data,
        calibrate_alpacaeval,
        format_alpaca_report,
    )

    if args.method == "mean":
        raise InputError("--protocol alpacaeval offers lowess, lowess-penalty and penalty")
    alpaca = AlpacaOptions(options, args.baseline)
    source = str(args.file)
    show = sys.stderr.isatty() if args.progress is None else bool(args.progress)
    table = read_table(args.file, show_progress=show)
    data = alpaca_data(table, source, alpaca, measure, args.reference_column)
    result = calibrate_alpacaeval(data, alpaca)
    print(format_alpaca_report(source, alpaca, result))
    if args.out is not None:
        for i, row in enumerate(table.rows):
            row["score_calibrated"] = float(result.calibrated[i])
            row["margin"] = float(result.margins[i])
            row["margin_calibrated"] = float(result.calibrated_margins[i])
        write_table(args.out, table, table_format(args.out), show)
        print(f"\nwrote {args.out}")
    if args.json_path is not None:
        metrics = {
            "source": source,
            "protocol": "alpacaeval",
            "options": {
                "method": options.method,
                "features": list(options.features),
                "alphas": list(options.alphas),
                "frac": options.config.frac,
                "it": options.config.it,
                "coef": options.config.penalty_coef,
                "penalty_length": options.penalty_length,
                "baseline": alpaca.baseline,
            },
            "leaderboard": result.leaderboard,
            "rank_correlation": result.correlation,
        }
        try:
            args.json_path.parent.mkdir(parents=True, exist_ok=True)
            args.json_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{args.json_path}: cannot write: {exc}") from None
        print(f"wrote {args.json_path}")
    return 0


def _add_pair_columns(
    table: Table,
    feats_c: dict[str, Any],
    feats_r: dict[str, Any],
    result: Any,
    features: tuple[str, ...],
) -> None:
    n = len(table.rows)
    calibrated = result.calibrated
    shift = sum(step.shift for step in result.steps)
    for i, row in enumerate(table.rows):
        row["scores_chosen_calibrated"] = float(calibrated[i])
        row["scores_rejected_calibrated"] = float(calibrated[n + i])
        row["bias_chosen"] = float(shift[i])
        row["bias_rejected"] = float(shift[n + i])
        row["results_calibrated"] = int(calibrated[i] > calibrated[n + i])
        for name in features:
            row[f"{name}_chosen"] = _int_if_whole(feats_c[name][i])
            row[f"{name}_rejected"] = _int_if_whole(feats_r[name][i])


def _add_sample_columns(
    table: Table, feats: dict[str, Any], result: Any, features: tuple[str, ...]
) -> None:
    shift = sum(step.shift for step in result.steps)
    given = set(table.columns)
    add = [f for f in features if f not in given and not (f == "chars" and "length" in given)]
    for i, row in enumerate(table.rows):
        row["reward_calibrated"] = float(result.calibrated[i])
        row["bias"] = float(shift[i])
        for name in add:
            row[name] = _int_if_whole(feats[name][i])


def _int_if_whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)
