"""LowessCurve: evaluation between and beyond the fitted values, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from kernel_data import assert_close, make_data, sm_lowess

from rewardcal_kernels import LowessCurve, lowess, lowess_curve


def test_curve_holds_the_fit_at_each_distinct_x() -> None:
    x, y = make_data("lengths", 3000, seed=41)
    curve = lowess_curve(x, y, 0.3)
    np.testing.assert_array_equal(curve.xs, np.unique(x))
    assert len(curve) == np.unique(x).size
    assert_close(curve(x), sm_lowess(x, y, 0.3, 3), y)


def test_curve_keeps_statsmodels_fallback_value_for_tie_runs() -> None:
    x, y = make_data("heavy_ties", 2000, seed=42)
    curve = lowess_curve(x, y, 0.02, 3)
    assert_close(curve(x), sm_lowess(x, y, 0.02, 3), y)


def test_curve_interpolates_linearly_and_extends_flat() -> None:
    curve = LowessCurve(xs=[0.0, 10.0, 20.0], ys=[1.0, 3.0, -1.0])
    np.testing.assert_allclose(curve([0.0, 5.0, 10.0, 12.5, 20.0]), [1.0, 2.0, 3.0, 2.0, -1.0])
    np.testing.assert_array_equal(curve([-100.0, -0.5, 20.5, 1e9]), [1.0, 1.0, -1.0, -1.0])
    assert curve(np.array([[5.0, 15.0]])).shape == (1, 2)
    assert np.isnan(curve([np.nan]))[0]


def test_single_point_curve_is_constant() -> None:
    curve = lowess_curve([7.0, 7.0, 7.0], [1.0, 2.0, 3.0], 1.0)
    np.testing.assert_array_equal(curve.xs, [7.0])
    np.testing.assert_array_equal(curve([-1.0, 7.0, 100.0]), np.full(3, curve.ys[0]))


def test_dict_round_trip_is_exact_through_json() -> None:
    x, y = make_data("lengths", 1000, seed=43)
    curve = lowess_curve(x, y, 1.0)
    back = LowessCurve.from_dict(json.loads(json.dumps(curve.to_dict())))
    np.testing.assert_array_equal(back.xs, curve.xs)
    np.testing.assert_array_equal(back.ys, curve.ys)


def test_curve_is_immutable() -> None:
    curve = LowessCurve(xs=[0.0, 1.0], ys=[2.0, 3.0])
    with pytest.raises(ValueError):
        curve.ys[0] = 5.0
    with pytest.raises(AttributeError):
        curve.xs = np.array([1.0, 2.0])  # type: ignore[misc]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"xs": [1.0, 1.0], "ys": [0.0, 1.0]}, "strictly increasing"),
        ({"xs": [2.0, 1.0], "ys": [0.0, 1.0]}, "strictly increasing"),
        ({"xs": [1.0, 2.0], "ys": [0.0]}, "differ in length"),
        ({"xs": [], "ys": []}, "at least one"),
        ({"xs": [1.0, np.nan], "ys": [0.0, 1.0]}, "finite"),
        ({"xs": [[1.0]], "ys": [[0.0]]}, "1-D"),
        ({"xs": [1.0]}, "'xs' and 'ys'"),
    ],
)
def test_from_dict_validates(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LowessCurve.from_dict(data)


def test_lowess_curve_drops_nan_and_rejects_empty() -> None:
    x, y = make_data("continuous", 300, seed=44)
    y[0] = np.nan
    curve = lowess_curve(x, y, 0.5)
    assert curve.xs.size == 299 and np.isfinite(curve.ys).all()
    np.testing.assert_allclose(curve(x[1:]), lowess(x, y, 0.5)[1:], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="no finite"):
        lowess_curve([np.nan], [1.0], 0.5)
    with pytest.raises(ValueError, match="frac"):
        lowess_curve(x, y, 0.0)
