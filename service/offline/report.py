"""What ``rewardcal calibrate`` measures and prints.

The metrics are a plain dict (written as JSON with ``--json``, full precision); the text
report is made from that dict alone.

- Length bias: Spearman(feature, reward) over the pooled samples, before and after
  (``chars`` always; every other calibrated feature too). The paper's headline figure is
  |Spearman(length, reward)| 0.293 -> 0.023 on average after RC-LWR.
- Pair files: a pair is correct when chosen > rejected (a tie is wrong), per subset, then
  RewardBench's section scores (example-count-weighted subset accuracies) and the overall
  score (mean of the sections present).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from rewardcal.offline.protocol import Calibrated, Options, PairData, SampleData, Step
from rewardcal.offline.rewardbench import (
    SECTION_OF,
    SECTIONS,
    SUBSET_MAPPING,
    XstestWeights,
    example_counts,
    overall_score,
    section_scores,
)

Array = npt.NDArray[np.float64]


def _spearman(a: Array, b: Array) -> float | None:
    from rewardcal.calibration.curve import spearman

    return spearman(a, b)


def _spearman_block(
    features: dict[str, Array], raw: Array, calibrated: Array, names: list[str]
) -> dict[str, dict[str, float | None]]:
    return {
        name: {
            "before": _spearman(features[name], raw),
            "after": _spearman(features[name], calibrated),
        }
        for name in names
    }


def _reported_features(options: Options) -> list[str]:
    return ["chars", *[f for f in options.features if f != "chars"]]


def _options(options: Options, xstest_weights: XstestWeights | None) -> dict[str, Any]:
    config = options.config
    out: dict[str, Any] = {
        "method": options.method,
        "features": list(options.features),
        "alphas": list(options.alphas),
        "center": config.center,
    }
    if options.method in ("lowess", "lowess-penalty"):
        out.update(frac=config.frac, it=config.it, delta=0.0)
    elif options.method == "mean":
        out.update(
            ratio=config.mean_ratio,
            min_neighbors=config.mean_min_neighbors,
            radius=config.mean_radius,
        )
    if options.method in ("penalty", "lowess-penalty"):
        out.update(coef=config.penalty_coef, penalty_length=options.penalty_length)
    if xstest_weights is not None:
        out["xstest_weights"] = xstest_weights
    return out


def _steps(steps: list[Step]) -> list[dict[str, Any]]:
    return [
        {
            "feature": s.feature,
            "alpha": s.alpha,
            "center": s.center,
            "radius": s.radius,
            "estimated": int(np.isfinite(s.b_hat).sum()),
        }
        for s in steps
    ]


def _subset_order(names: set[str]) -> list[str]:
    known = [s for subsets in SUBSET_MAPPING.values() for s in subsets if s in names]
    return known + sorted(names - set(known))


def pair_metrics(
    source: str,
    data: PairData,
    result: Calibrated,
    options: Options,
    xstest_weights: XstestWeights = "rewardbench",
) -> dict[str, Any]:
    """Metrics of a calibrated pair file (pool: chosen then rejected)."""
    n = data.size
    before = data.chosen > data.rejected
    after = result.calibrated[:n] > result.calibrated[n:]
    pooled = {
        f: np.concatenate([data.features_chosen[f], data.features_rejected[f]])
        for f in data.features_chosen
    }
    counts = example_counts(xstest_weights)
    metrics: dict[str, Any] = {
        "file": source,
        "kind": "pairs",
        "rows": n,
        "samples": 2 * n,
        "options": _options(options, xstest_weights),
        "steps": _steps(result.steps),
        "spearman": _spearman_block(
            pooled, result.raw, result.calibrated, _reported_features(options)
        ),
        "accuracy": {"before": float(before.mean()), "after": float(after.mean())},
        "preference_changed": float((before != after).mean()),
        "subsets": [],
        "sections": {},
        "overall": None,
    }
    if data.subsets is None:
        return metrics
    labels = np.array(data.subsets, dtype=object)
    acc_before: dict[str, float] = {}
    acc_after: dict[str, float] = {}
    for subset in _subset_order(set(data.subsets)):
        mask = labels == subset
        pairs = int(mask.sum())
        correct_before, correct_after = int(before[mask].sum()), int(after[mask].sum())
        section = SECTION_OF.get(subset)
        metrics["subsets"].append(
            {
                "subset": subset,
                "section": section,
                "pairs": pairs,
                "weight": counts.get(subset) if section else None,
                "correct_before": correct_before,
                "correct_after": correct_after,
                "accuracy_before": correct_before / pairs,
                "accuracy_after": correct_after / pairs,
            }
        )
        if section is not None:
            acc_before[subset] = correct_before / pairs
            acc_after[subset] = correct_after / pairs
    sec_before = section_scores(acc_before, counts)
    sec_after = section_scores(acc_after, counts)
    metrics["sections"] = {
        s: {"before": sec_before[s], "after": sec_after[s]} for s in SECTIONS if s in sec_before
    }
    if sec_before:
        metrics["overall"] = {
            "before": overall_score(sec_before),
            "after": overall_score(sec_after),
            "sections": len(sec_before),
        }
    return metrics


def sample_metrics(
    source: str,
    data: SampleData,
    result: Calibrated,
    parts: dict[str, Calibrated],
    index: dict[str, npt.NDArray[np.int64]],
    options: Options,
) -> dict[str, Any]:
    """Metrics of a calibrated file of scored samples (one pool per group)."""
    names = _reported_features(options)
    groups = []
    if data.has_groups:
        for group, idx in index.items():
            part = parts[group]
            groups.append(
                {
                    "group": group,
                    "samples": int(idx.size),
                    "spearman": _spearman_block(
                        {f: v[idx] for f, v in data.features.items()},
                        part.raw,
                        part.calibrated,
                        names,
                    ),
                    "steps": _steps(part.steps),
                }
            )
    return {
        "file": source,
        "kind": "samples",
        "rows": data.size,
        "samples": data.size,
        "options": _options(options, None),
        "steps": _steps(result.steps),
        "spearman": _spearman_block(data.features, result.raw, result.calibrated, names),
        "groups": groups,
    }


# ---------------------------------------------------------------------------------------
# Text


def _rho(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:+.4f}"


def _pct(value: float | None) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}"


def _delta(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return ""
    return f"{100 * (after - before):+6.2f}"


def _describe(options: dict[str, Any]) -> str:
    method = options["method"]
    if method == "lowess":
        how = f"RC-LWR (LOWESS frac {options['frac']:g}, it {options['it']}, delta 0)"
    elif method == "lowess-penalty":
        how = (
            f"RC-LWR-Penalty (penalty coef {options['coef']:g} on the "
            f"{options['penalty_length']} length, then LOWESS frac {options['frac']:g}, "
            f"it {options['it']}, delta 0)"
        )
    elif method == "mean":
        radius = options["radius"]
        how = (
            f"RC-Mean (ratio {options['ratio']:g}, min {options['min_neighbors']} "
            f"neighbours{'' if radius is None else f', d {radius:g}'})"
        )
    else:
        how = f"length penalty (coef {options['coef']:g})"
    feats = ", ".join(
        f"{f} (alpha {a:g})" for f, a in zip(options["features"], options["alphas"], strict=True)
    )
    return f"{how}; features {feats}; center {options['center']}"


def format_report(metrics: dict[str, Any]) -> str:
    lines: list[str] = []
    kind = metrics["kind"]
    if kind == "pairs":
        lines.append(
            f"{metrics['file']}: {metrics['rows']:,} pairs "
            f"({metrics['samples']:,} responses pooled)"
        )
    else:
        groups = len(metrics["groups"]) or 1
        lines.append(
            f"{metrics['file']}: {metrics['rows']:,} scored samples in "
            f"{groups} group{'s' if groups != 1 else ''}"
        )
    lines.append(f"calibration: {_describe(metrics['options'])}")
    for step in metrics["steps"]:
        extra = []
        if step["radius"] is not None:
            extra.append(f"d = {step['radius']:.6g}")
        if step["center"] is not None and metrics["options"]["center"] == "mean":
            extra.append(f"center = {step['center']:.6g}")
        if step["estimated"] < metrics["samples"]:
            extra.append(f"estimated for {step['estimated']:,} of {metrics['samples']:,}")
        if extra:
            lines.append(f"  {step['feature']}: " + ", ".join(extra))
    lines.append("")

    if kind == "pairs":
        lines.extend(_pair_tables(metrics))
        lines.append("")
    lines.append("Spearman(feature, reward), pooled:")
    lines.append(f"  {'feature':<10} {'before':>8} {'after':>8}")
    for name, block in metrics["spearman"].items():
        lines.append(f"  {name:<10} {_rho(block['before']):>8} {_rho(block['after']):>8}")
    if kind == "samples" and metrics["groups"]:
        lines.append("")
        lines.append("per group (each calibrated on its own):")
        lines.append(f"  {'group':<24} {'samples':>8}  {'Spearman(chars) before':>22} {'after':>8}")
        for group in metrics["groups"]:
            block = group["spearman"]["chars"]
            lines.append(
                f"  {group['group'][:24]:<24} {group['samples']:>8,}  "
                f"{_rho(block['before']):>22} {_rho(block['after']):>8}"
            )
    return "\n".join(lines)


def _pair_tables(metrics: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    acc = metrics["accuracy"]
    lines.append(
        f"pair accuracy (chosen > rejected): {_pct(acc['before']).strip()}% -> "
        f"{_pct(acc['after']).strip()}%; preference changed on "
        f"{100 * metrics['preference_changed']:.2f}% of pairs"
    )
    if not metrics["subsets"]:
        lines.append("(no 'subset' column: no RewardBench sections)")
        return lines
    weights = metrics["options"].get("xstest_weights", "rewardbench")
    lines.append("")
    lines.append(
        f"RewardBench sections (weights: RewardBench's example counts"
        f"{', XSTest at row counts' if weights == 'rows' else ''}):"
    )
    lines.append(f"  {'section':<12} {'before':>7} {'after':>7} {'delta':>7}")
    for section, block in metrics["sections"].items():
        lines.append(
            f"  {section:<12} {_pct(block['before']):>7} {_pct(block['after']):>7} "
            f"{_delta(block['before'], block['after']):>7}"
        )
    overall = metrics["overall"]
    if overall is not None:
        label = f"Overall ({overall['sections']})"
        lines.append(
            f"  {label:<12} {_pct(overall['before']):>7} {_pct(overall['after']):>7} "
            f"{_delta(overall['before'], overall['after']):>7}"
        )
    else:
        lines.append("  (no subset of the file belongs to a RewardBench section)")
    lines.append("")
    lines.append(
        f"  {'subset':<24} {'section':<10} {'pairs':>6} {'weight':>6} {'before':>7} {'after':>7}"
    )
    for row in metrics["subsets"]:
        weight = "-" if row["weight"] is None else str(row["weight"])
        section = row["section"] or "-"
        lines.append(
            f"  {row['subset'][:24]:<24} {section:<10} {row['pairs']:>6} {weight:>6} "
            f"{_pct(row['accuracy_before']):>7} {_pct(row['accuracy_after']):>7}"
        )
    return lines
