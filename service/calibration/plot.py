"""Reward vs response length, raw and calibrated, with the fitted bias curve (PNG)."""

from __future__ import annotations

import io

import numpy as np

from rewardcal.calibration.config import feature_index
from rewardcal.calibration.curve import Curve, spearman
from rewardcal.calibration.window import Array
from rewardcal.plotting import new_figure, sample_points, scatter_rewards


def render_png(
    title: str, features: Array, raw: Array, curve: Curve | None, max_points: int = 4000
) -> bytes:
    """The window's rewards against the curve's first feature; safe to call from threads."""
    feature = curve.components[0].feature if curve and curve.components else "chars"
    c = features[:, feature_index(feature)] if features.size else np.zeros(0)
    fig = new_figure(8, 4.8)
    ax = fig.subplots()
    if raw.size:
        pick = sample_points(raw.size, max_points)
        scatter_rewards(ax, c[pick], raw[pick], calibrated=False, spearman=spearman(c, raw))
        if curve is not None:
            calibrated, _ = curve.apply_arrays(features, raw)
            rho = spearman(c, calibrated)
            scatter_rewards(ax, c[pick], calibrated[pick], calibrated=True, spearman=rho)
            if curve.components:
                grid = np.linspace(float(c.min()), float(c.max()), 300)
                ax.plot(
                    grid,
                    curve.components[0].estimator(grid),
                    color="black",
                    linewidth=2,
                    label=f"fitted bias b({feature}), v{curve.version}",
                )
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no observations yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"response {feature}")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
