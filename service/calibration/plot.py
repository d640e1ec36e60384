"""Reward vs response length, raw and calibrated, with the fitted bias curve (PNG)."""

from __future__ import annotations

import io

import numpy as np

from service.calibration.config import feature_index
from service.calibration.curve import Curve, spearman
from service.calibration.window import Array


def render_png(
    title: str, features: Array, raw: Array, curve: Curve | None, max_points: int = 4000
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feature = curve.components[0].feature if curve and curve.components else "chars"
    c = features[:, feature_index(feature)] if features.size else np.zeros(0)
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=100)
    try:
        if raw.size:
            rng = np.random.default_rng(0)
            pick = rng.choice(raw.size, size=min(raw.size, max_points), replace=False)
            rho_raw = spearman(c, raw)
            ax.scatter(
                c[pick],
                raw[pick],
                s=6,
                alpha=0.35,
                color="tab:red",
                label=f"raw (Spearman {_fmt(rho_raw)})",
            )
            if curve is not None:
                calibrated, _ = curve.apply_arrays(features, raw)
                rho_cal = spearman(c, calibrated)
                ax.scatter(
                    c[pick],
                    calibrated[pick],
                    s=6,
                    alpha=0.35,
                    color="tab:blue",
                    label=f"calibrated (Spearman {_fmt(rho_cal)})",
                )
                grid = np.linspace(float(c.min()), float(c.max()), 300)
                first = curve.components[0] if curve.components else None
                if first is not None:
                    ax.plot(
                        grid,
                        first.estimator(grid),
                        color="black",
                        linewidth=2,
                        label=f"fitted bias b({feature}), v{curve.version}",
                    )
        else:
            ax.text(
                0.5, 0.5, "no observations yet", ha="center", va="center", transform=ax.transAxes
            )
        ax.set_xlabel(f"response {feature}")
        ax.set_ylabel("reward")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if raw.size:
            ax.legend(loc="best", fontsize=8)
        buffer = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"
