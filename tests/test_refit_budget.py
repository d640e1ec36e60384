"""Background refits stay within their CPU share; the kernels can be loaded ahead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from rewardcal.calibration.config import StreamConfig
from rewardcal.calibration.engine import MAX_REFIT_PAUSE_S, CalibrationEngine, RefitBudget
from rewardcal.calibration.stream import CalibrationStatus
from rewardcal.config import Settings
from rewardcal.metrics import CalibrationMetrics
from rewardcal.runtime import create_calibration


def test_a_refit_is_followed_by_a_pause_in_proportion_to_its_cost() -> None:
    budget = RefitBudget(0.1)
    assert budget.ready(0.0)
    budget.spent(0.05, now=100.0)  # 50 ms at a 10% share: 450 ms of pause
    assert not budget.ready(100.44)
    assert budget.ready(100.46)
    budget.spent(60.0, now=200.0)  # a first fit that compiled the kernels
    assert not budget.ready(200.0 + MAX_REFIT_PAUSE_S - 0.01)
    assert budget.ready(200.0 + MAX_REFIT_PAUSE_S)
    full = RefitBudget(1.0)
    full.spent(5.0, now=10.0)
    assert full.ready(10.0)  # share 1: no pause
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            RefitBudget(bad)


def _observe(engine: CalibrationEngine, group: str, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    chars = rng.integers(10, 2000, n).astype(float)
    raw = (chars * 1e-3 + rng.normal(0, 0.1, n)).tolist()
    engine.record("m", group, [{"chars": c} for c in chars], raw, raw, observe=True)


def test_refit_due_stops_when_the_budget_is_spent_oldest_first() -> None:
    config = StreamConfig(frac=0.5, min_samples=32, refit_every=8)
    thrifty = CalibrationEngine(config, refit_cpu_share=1e-9)  # any fit uses it up
    for group in ("a", "b"):
        _observe(thrifty, group, 64, seed=1)
    assert thrifty.refit_due() == 1  # the second stream waits for the pause
    assert thrifty.refit_due() == 0
    fitted = [s.group for s in thrifty.streams() if s.current_curve is not None]
    assert fitted == ["a"]  # created first: the longest unfitted

    unlimited = CalibrationEngine(config, refit_cpu_share=1.0)
    for group in ("a", "b"):
        _observe(unlimited, group, 64, seed=1)
    assert unlimited.refit_due() == 2
    # An operator's refit is not held back by the budget.
    _observe(thrifty, "b", 8, seed=2)
    assert thrifty.fit_now(thrifty.stream("m", "b")) is not None


def test_the_setting_reaches_the_engine(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, calibration_refit_cpu_share=0.2, state_dir=tmp_path
    )
    engine = create_calibration(settings, "m", CalibrationMetrics(CollectorRegistry()))
    assert engine.refit_budget.share == 0.2
    assert Settings(_env_file=None).calibration_refit_cpu_share == 0.05  # type: ignore[call-arg]


def test_warm_up_fits_without_touching_any_stream() -> None:
    engine = CalibrationEngine(StreamConfig())
    engine.warm_up()
    assert engine.streams() == []
    view = engine.current("m", "g")
    assert view.status is CalibrationStatus.WARMING_UP  # nothing was fitted for real
    CalibrationEngine(StreamConfig(method="none")).warm_up()  # nothing to load


def test_fits_run_with_one_blas_thread_and_restore_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Extra OpenBLAS threads spin through a refit's vector products without speeding it
    up (2x the CPU measured with two): a fit runs with one, the setting is restored."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from rewardcal.calibration import curve

    def blas_threads() -> set[int]:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    seen: list[set[int]] = []
    estimator = curve._estimator  # called inside the fit, once per feature step

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(blas_threads())
        return estimator(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(curve, "_estimator", spy)
    with threadpool_limits(limits=2, user_api="blas"):
        assert blas_threads() == {2}
        rng = np.random.default_rng(0)
        features = np.zeros((200, 3))
        features[:, 0] = rng.integers(1, 500, 200)
        curve.fit_curve(StreamConfig(frac=0.5), features, rng.normal(size=200))
        assert seen == [{1}]
        assert blas_threads() == {2}
