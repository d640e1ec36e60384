"""Numeric kernels of rewardcal: LOWESS (RC-LWR), its span choice, and RC-Mean.

Each public function validates its input once and hands clean float64 arrays to private
implementations (``_lowess_*``) that only do arithmetic.
"""

from .curve import LowessCurve
from .lowess import lowess, lowess_curve
from .rc_mean import rc_mean, rc_mean_radius
from .span import DEFAULT_SPANS, SpanChoice, choose_span

__all__ = [
    "DEFAULT_SPANS",
    "SpanChoice",
    "choose_span",
    "LowessCurve",
    "lowess",
    "lowess_curve",
    "rc_mean",
    "rc_mean_radius",
]
