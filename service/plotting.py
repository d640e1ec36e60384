"""Shared pieces of the reward-vs-length plots (the service's plot.png, the offline CLI's).

Figures are built with matplotlib's object API on an Agg canvas, never through pyplot: the
service renders plots in worker threads, and pyplot's global figure state is not thread-safe.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure with its own Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def sample_points(n: int, max_points: int) -> npt.NDArray[np.int64]:
    """At most ``max_points`` of ``n`` row indices, the same ones for the same n (seed 0)."""
    if n <= max_points:
        return np.arange(n)
    return np.random.default_rng(0).choice(n, size=max_points, replace=False)


def fmt_rho(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def scatter_rewards(
    ax: Any,
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    *,
    calibrated: bool,
    spearman: float | None,
    size: float = 6,
) -> None:
    """Rewards against the feature: red for raw, blue for calibrated, Spearman in the label."""
    kind = "calibrated" if calibrated else "raw"
    color = "tab:blue" if calibrated else "tab:red"
    label = f"{kind} (Spearman {fmt_rho(spearman)})"
    ax.scatter(x, y, s=size, alpha=0.35, color=color, label=label)
