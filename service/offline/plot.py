"""PNG of reward vs the first feature: raw with the fitted bias, and calibrated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from rewardcal.offline.io import InputError
from rewardcal.plotting import new_figure, sample_points, scatter_rewards

Array = npt.NDArray[np.float64]
MAX_POINTS = 5000
MAX_CURVES = 8


def write_plot(
    path: Path,
    title: str,
    feature: str,
    c: Array,
    raw: Array,
    calibrated: Array,
    b_hat: Array,
    curves: dict[str, npt.NDArray[np.int64]],
    spearman_raw: float | None,
    spearman_calibrated: float | None,
) -> None:
    """Two panels: raw rewards with each pool's fitted b_hat, and calibrated rewards.

    ``curves`` maps a pool's name to its row indices (one curve per pool, at most
    ``MAX_CURVES``). Uses matplotlib's Agg canvas directly (no pyplot state).
    """
    fig = new_figure(11, 4.6)
    left, right = fig.subplots(1, 2, sharex=True)
    pick = sample_points(c.size, MAX_POINTS)
    scatter_rewards(left, c[pick], raw[pick], calibrated=False, spearman=spearman_raw, size=5)
    for number, (name, idx) in enumerate(curves.items()):
        if number >= MAX_CURVES:
            break
        keep = idx[np.isfinite(b_hat[idx])]
        order = keep[np.argsort(c[keep], kind="stable")]
        label = "fitted bias b_hat" if len(curves) == 1 else f"b_hat [{name}]"
        left.plot(
            c[order],
            b_hat[order],
            linewidth=2,
            color="black" if len(curves) == 1 else None,
            label=label,
        )
    scatter_rewards(
        right, c[pick], calibrated[pick], calibrated=True, spearman=spearman_calibrated, size=5
    )
    for ax, name in ((left, "raw reward"), (right, "calibrated reward")):
        ax.set_xlabel(f"response {feature}")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    except OSError as exc:
        raise InputError(f"{path}: cannot write the plot: {exc}") from None
