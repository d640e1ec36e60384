"""Calibration streams: the paper's formula, statuses, versions, refits, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from rewardcal.calibration import (
    CalibrationEngine,
    CalibrationStatus,
    FeatureStep,
    LocalSnapshotStore,
    StreamConfig,
    fit_curve,
)
from rewardcal.calibration.curve import curve_drift
from rewardcal.calibration.persistence import (
    CorruptSnapshot,
    StreamSnapshot,
    decode_snapshot,
    encode_snapshot,
)
from rewardcal.calibration.window import RollingWindow
from rewardcal.features import FEATURE_NAMES

MODEL = "rm"


def _biased_samples(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Integer lengths with many ties and a reward that pays for length."""
    rng = np.random.default_rng(seed)
    chars = np.round(rng.lognormal(6.0, 0.8, n)).clip(5, 8000)
    raw = 0.8 * np.log(chars) + rng.normal(0, 0.5, n)
    features = np.zeros((n, len(FEATURE_NAMES)))
    features[:, 0] = chars
    features[:, 1] = np.round(chars / 4)
    features[:, 2] = rng.integers(0, 6, n)
    return features, raw


def _as_dicts(features: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(FEATURE_NAMES, map(float, row), strict=True)) for row in features]


def test_rc_lwr_is_raw_minus_statsmodels_lowess() -> None:
    features, raw = _biased_samples(3000)
    config = StreamConfig(method="lowess", frac=0.3, it=3, window=4096, min_samples=10)
    curve = fit_curve(config, features, raw, version=1)
    calibrated, bias = curve.apply_arrays(features, raw)
    expected_bias = sm.nonparametric.lowess(
        raw, features[:, 0], frac=0.3, it=3, delta=0, return_sorted=False
    )
    np.testing.assert_allclose(bias, expected_bias, atol=1e-9 * np.ptp(raw))
    np.testing.assert_allclose(calibrated, raw - expected_bias, atol=1e-9 * np.ptp(raw))
    assert abs(curve.stats.spearman_raw or 0) > 0.5
    assert abs(curve.stats.spearman_calibrated or 1) < 0.05
    assert (curve.stats.slope_per_1k or 0) > 0


def test_center_mean_keeps_reward_level_and_alpha_scales() -> None:
    features, raw = _biased_samples(2000)
    base = dict(method="lowess", window=4096, min_samples=10)
    plain = fit_curve(StreamConfig(**base), features, raw, 1)
    centred = fit_curve(StreamConfig(**base, center="mean"), features, raw, 1)
    half = fit_curve(StreamConfig(**base, features=(FeatureStep(alpha=0.5),)), features, raw, 1)
    cal_plain, bias_plain = plain.apply_arrays(features, raw)
    cal_centred, _ = centred.apply_arrays(features, raw)
    _, bias_half = half.apply_arrays(features, raw)
    assert abs(cal_plain.mean()) < 0.05  # residuals near 0 (the paper)
    assert cal_centred.mean() == pytest.approx(raw.mean(), abs=1e-9)
    np.testing.assert_allclose(bias_half, 0.5 * bias_plain, atol=1e-12)


def test_features_in_sequence_fit_on_the_residual() -> None:
    features, raw = _biased_samples(2000)
    raw = raw + 0.3 * features[:, 2]  # a markdown bias on top
    config = StreamConfig(
        method="lowess",
        frac=1.0,
        window=4096,
        min_samples=10,
        features=(FeatureStep(feature="chars"), FeatureStep(feature="markdown", alpha=1.0)),
    )
    curve = fit_curve(config, features, raw, 1)
    first = sm.nonparametric.lowess(
        raw, features[:, 0], frac=1.0, it=3, delta=0, return_sorted=False
    )
    second = sm.nonparametric.lowess(
        raw - first, features[:, 2], frac=1.0, it=3, delta=0, return_sorted=False
    )
    calibrated, _ = curve.apply_arrays(features, raw)
    np.testing.assert_allclose(calibrated, raw - first - second, atol=1e-8)


def test_half_life_weights_recent_samples_like_weighted_lowess() -> None:
    """The window is oldest first; the curve is LOWESS with weights 0.5 ** (age / h)."""
    from rewardcal_kernels import lowess

    features, raw = _biased_samples(1200, seed=3)
    config = StreamConfig(frac=0.3, window=4096, min_samples=10, half_life=200)
    curve = fit_curve(config, features, raw, 1)
    age = np.arange(raw.size - 1, -1, -1)
    want = lowess(features[:, 0], raw, 0.3, 3, weights=0.5 ** (age / 200))
    _, bias = curve.apply_arrays(features, raw)
    np.testing.assert_allclose(bias, want, atol=1e-9 * np.ptp(raw))
    plain = fit_curve(config.model_copy(update={"half_life": None}), features, raw, 1)
    assert not np.allclose(plain.apply_arrays(features, raw)[1], bias)


def test_half_life_follows_a_policy_that_changed_its_bias() -> None:
    """The first 3,000 samples pay for length, the last 1,000 do not: with a short
    half-life the curve is flat, with equal weights it still removes the old slope."""
    features, raw = _biased_samples(4000, seed=5)
    raw[-1000:] = np.random.default_rng(1).normal(0, 0.5, 1000)
    config = StreamConfig(frac=0.3, window=4096, min_samples=10)
    recent = fit_curve(config.model_copy(update={"half_life": 250}), features, raw, 1)
    flat = fit_curve(config, features, raw, 1)
    c = features[-1000:]
    slope = [
        np.corrcoef(np.log(c[:, 0]), cv.apply_arrays(c, raw[-1000:])[1])[0, 1]
        for cv in (recent, flat)
    ]
    spread = [float(np.ptp(cv.apply_arrays(c, raw[-1000:])[1])) for cv in (recent, flat)]
    assert spread[0] < 0.5 * spread[1]
    assert slope[1] > 0.9


def test_half_life_needs_lowess_and_maps_from_settings() -> None:
    from rewardcal.config import Settings

    with pytest.raises(ValueError, match="half_life"):
        StreamConfig(method="mean", half_life=100)
    with pytest.raises(ValueError):
        StreamConfig(half_life=0)
    assert Settings(calibration_half_life=512).stream_defaults().half_life == 512
    assert Settings().stream_defaults().half_life is None


def test_rc_mean_and_penalty_methods() -> None:
    features, raw = _biased_samples(1500)
    c = features[:, 0]
    curve = fit_curve(
        StreamConfig(method="mean", mean_radius=50.0, window=4096, min_samples=10), features, raw, 1
    )
    _, bias = curve.apply_arrays(features, raw)
    for i in range(0, 1500, 97):  # the definition, directly
        near = np.abs(c - c[i]) <= 50.0
        expected = raw[near].mean() if near.sum() >= 20 else 0.0
        assert bias[i] == pytest.approx(expected, abs=1e-9)
    penalty = fit_curve(
        StreamConfig(method="penalty", window=4096, min_samples=10), features, raw, 1
    )
    calibrated, _ = penalty.apply_arrays(features, raw)
    np.testing.assert_allclose(calibrated, raw - 0.001 * c)


def test_standardize_and_clip_post_steps() -> None:
    features, raw = _biased_samples(1000)
    curve = fit_curve(
        StreamConfig(window=4096, min_samples=10, standardize=True, clip=1.5), features, raw, 1
    )
    calibrated, _ = curve.apply_arrays(features, raw)
    assert calibrated.max() <= 1.5 and calibrated.min() >= -1.5
    unclipped = fit_curve(
        StreamConfig(window=4096, min_samples=10, standardize=True), features, raw, 1
    )
    values, _ = unclipped.apply_arrays(features, raw)
    assert values.mean() == pytest.approx(0, abs=1e-9) and values.std() == pytest.approx(
        1, abs=1e-9
    )


def test_rolling_window_keeps_the_last_w_in_order() -> None:
    window = RollingWindow(5)
    for start in range(0, 12, 3):
        rows = np.arange(start, start + 3, dtype=float)
        window.add(np.repeat(rows[:, None], 3, axis=1), rows)
    features, raw = window.arrays()
    assert raw.tolist() == [7, 8, 9, 10, 11]
    assert features[:, 0].tolist() == [7, 8, 9, 10, 11]
    assert len(window) == 5 and window.total == 12
    window.add(np.zeros((9, 3)), np.arange(100, 109, dtype=float))
    assert window.arrays()[1].tolist() == [104, 105, 106, 107, 108]


def _engine(tmp_path, **config):  # type: ignore[no-untyped-def]
    defaults = StreamConfig(**{"window": 2048, "min_samples": 200, "refit_every": 100, **config})
    return CalibrationEngine(defaults, store=LocalSnapshotStore(tmp_path), max_groups=3)


def test_stream_statuses_versions_and_observe_opt_out(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(tmp_path)
    features, raw = _biased_samples(600)
    view = engine.current(MODEL, "run")
    assert (view.status, view.version) == (CalibrationStatus.WARMING_UP, 0)
    assert view.apply(_as_dicts(features[:3]), raw[:3].tolist())[0] == raw[:3].tolist()

    engine.record(
        MODEL,
        "run",
        _as_dicts(features[:150]),
        raw[:150].tolist(),
        raw[:150].tolist(),
        observe=True,
    )
    engine.record(
        MODEL,
        "run",
        _as_dicts(features[150:400]),
        raw[150:400].tolist(),
        raw[150:400].tolist(),
        observe=False,
    )
    stream = engine.stream(MODEL, "run")
    assert stream.window_samples == 150  # evaluation traffic did not move the window
    assert engine.refit_due() == 0  # below min_samples

    engine.record(
        MODEL,
        "run",
        _as_dicts(features[150:300]),
        raw[150:300].tolist(),
        raw[150:300].tolist(),
        observe=True,
    )
    assert engine.refit_due() == 1
    view1 = engine.current(MODEL, "run")
    assert (view1.status, view1.version) == (CalibrationStatus.CALIBRATED, 1)
    assert engine.refit_due() == 0  # nothing new

    engine.record(
        MODEL,
        "run",
        _as_dicts(features[300:450]),
        raw[300:450].tolist(),
        raw[300:450].tolist(),
        observe=True,
    )
    assert engine.refit_due() == 1
    view2 = engine.current(MODEL, "run")
    assert view2.version == 2
    # An earlier view still applies the curve it was taken with (immutable curves).
    cal1, _ = view1.apply(_as_dicts(features[:5]), raw[:5].tolist())
    cal2, _ = view2.apply(_as_dicts(features[:5]), raw[:5].tolist())
    assert cal1 != cal2
    assert curve_drift(view1.curve, view2.curve) == pytest.approx(
        max(
            abs(a - b)
            for a, b in zip(
                view2.curve.components[0].bias(np.linspace(*view2.curve.stats.feature_range, 256)),  # type: ignore[union-attr,misc]
                view1.curve.components[0].bias(np.linspace(*view2.curve.stats.feature_range, 256)),  # type: ignore[union-attr,misc]
                strict=True,
            )
        )
    )

    # The drift from the curve it replaced is measured once, when a curve is published.
    assert view1.curve is not None and view2.curve is not None
    assert view1.curve.stats.drift is None
    assert view2.curve.stats.drift == curve_drift(view1.curve, view2.curve)

    stream.freeze()
    engine.record(
        MODEL,
        "run",
        _as_dicts(features[450:]),
        raw[450:].tolist(),
        raw[450:].tolist(),
        observe=True,
    )
    assert engine.refit_due() == 0
    assert engine.current(MODEL, "run").status == CalibrationStatus.FROZEN
    assert engine.current(MODEL, "run").version == 2
    stream.unfreeze()
    assert engine.refit_due() == 1 and engine.current(MODEL, "run").version == 3

    stream.reset()
    after = engine.current(MODEL, "run")
    assert (after.status, stream.window_samples) == (CalibrationStatus.WARMING_UP, 0)


def test_method_none_is_uncalibrated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(tmp_path, method="none")
    features, raw = _biased_samples(300)
    engine.record(MODEL, "g", _as_dicts(features), raw.tolist(), raw.tolist(), observe=True)
    assert engine.refit_due() == 0
    view = engine.current(MODEL, "g")
    assert (view.status, view.version, view.method) == (CalibrationStatus.UNCALIBRATED, 0, "none")


def test_reference_curve_until_own_fit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = _engine(tmp_path / "a")
    features, raw = _biased_samples(600)
    source.record(MODEL, "train", _as_dicts(features), raw.tolist(), raw.tolist(), observe=True)
    source.refit_due()
    curve = source.current(MODEL, "train").curve
    assert curve is not None
    target = _engine(tmp_path / "b")
    stream = target.stream(MODEL, "eval")
    stream.load_reference(curve, None, freeze=False)
    view = target.current(MODEL, "eval")
    assert (view.status, view.version) == (CalibrationStatus.REFERENCE, curve.version)
    target.record(
        MODEL,
        "eval",
        _as_dicts(features[:300]),
        raw[:300].tolist(),
        raw[:300].tolist(),
        observe=True,
    )
    target.refit_due()
    own = target.current(MODEL, "eval")
    assert own.status == CalibrationStatus.CALIBRATED and own.version == curve.version + 1


def test_group_cap(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from rewardcal.errors import ServiceError

    engine = _engine(tmp_path)
    sample = [{"chars": 10.0, "tokens": 3.0, "markdown": 0.0}]
    for group in ("a", "b", "c"):
        engine.record(MODEL, group, sample, [0.1], [0.1], observe=True)
    with pytest.raises(ServiceError, match="too many calibration groups"):
        engine.current(MODEL, "d")
    engine.current(MODEL, "d", create=False)  # evaluation traffic is never refused


def test_snapshot_round_trip_and_corruption_is_skipped(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(tmp_path)
    features, raw = _biased_samples(500)
    engine.record(MODEL, "run", _as_dicts(features), raw.tolist(), raw.tolist(), observe=True)
    engine.refit_due()
    engine.record(
        MODEL, "other", _as_dicts(features[:50]), raw[:50].tolist(), raw[:50].tolist(), observe=True
    )
    assert engine.snapshot() == 2
    before = engine.current(MODEL, "run")

    restored = _engine(tmp_path)
    assert restored.restore() == 2
    after = restored.current(MODEL, "run")
    assert (after.version, after.status) == (before.version, before.status)
    assert restored.stream(MODEL, "run").window_samples == 500
    sample = _as_dicts(features[:20])
    assert after.apply(sample, raw[:20].tolist()) == before.apply(sample, raw[:20].tolist())

    store = LocalSnapshotStore(tmp_path)
    run_path = store.path_for(MODEL, "run")
    data = run_path.read_bytes()
    run_path.write_bytes(data[: len(data) // 2])  # torn write
    other_path = store.path_for(MODEL, "other")
    damaged = bytearray(other_path.read_bytes())
    damaged[-10] ^= 0xFF  # flipped bits
    other_path.write_bytes(bytes(damaged))
    with caplog.at_level("WARNING"):
        fresh = _engine(tmp_path)
        assert fresh.restore() == 0
    assert "checksum mismatch" in caplog.text or "truncated" in caplog.text
    assert fresh.current(MODEL, "run").status == CalibrationStatus.WARMING_UP


# A stream as the previous version wrote it to its snapshot (curves with stats but no
# drift; the curve's dict hand-written then), with an RC-LWR curve and a reference.
_PREVIOUS_VERSION_META = {
    "model": MODEL,
    "group": "old",
    "config": {
        "method": "lowess",
        "features": [{"feature": "chars", "alpha": 1.0}],
        "frac": 0.5,
        "it": 3,
        "lowess_mode": "auto",
        "center": "none",
        "window": 2048,
        "min_samples": 200,
        "refit_every": 100,
        "refit_interval_s": 30.0,
        "mean_ratio": 4.0,
        "mean_radius": None,
        "mean_min_neighbors": 20,
        "penalty_coef": 0.001,
        "standardize": False,
        "clip": None,
    },
    "version": 3,
    "frozen": False,
    "curve": {
        "version": 3,
        "method": "lowess",
        "components": [
            {
                "feature": "chars",
                "alpha": 1.0,
                "center": 0.0,
                "estimator": {
                    "kind": "lowess",
                    "xs": [10.0, 100.0, 1000.0],
                    "ys": [0.5, 1.5, 2.0],
                    "frac": 0.5,
                },
            }
        ],
        "post": {"mean": None, "std": None, "clip": None},
        "stats": {
            "samples": 450,
            "spearman_raw": 0.61,
            "spearman_calibrated": 0.02,
            "slope_per_1k": 1.2,
            "feature_range": [10.0, 1000.0],
        },
        "fitted_at": 1700000000.0,
    },
    "reference": {
        "version": 1,
        "method": "penalty",
        "components": [
            {
                "feature": "chars",
                "alpha": 0.5,
                "center": 0.0,
                "estimator": {"kind": "penalty", "coef": 0.001},
            }
        ],
    },
    "observed_total": 450,
    "last_used_at": 1700000000.0,
}


def test_a_snapshot_of_the_previous_version_loads_and_serves_its_stats(tmp_path) -> None:  # type: ignore[no-untyped-def]
    features, raw = _biased_samples(300)
    LocalSnapshotStore(tmp_path).save(StreamSnapshot(_PREVIOUS_VERSION_META, features, raw))
    engine = _engine(tmp_path)
    assert engine.restore() == 1
    view = engine.current(MODEL, "old")
    assert (view.status, view.version) == (CalibrationStatus.CALIBRATED, 3)
    calibrated, bias = view.apply([{"chars": 55.0}, {"chars": 5000.0}], [1.0, 3.0])
    assert bias == pytest.approx([1.0, 2.0])  # linear between points, flat beyond
    assert calibrated == pytest.approx([0.0, 1.0])
    assert view.curve is not None and view.curve.stats.spearman_raw == 0.61
    assert view.curve.span == 0.5
    # Written back unchanged, with the one new statistic (unknown for old curves).
    meta, _ = engine.stream(MODEL, "old").export_state(include_window=False)
    for key in ("curve", "reference"):
        assert meta[key]["stats"].pop("drift") is None
    assert meta["curve"] == _PREVIOUS_VERSION_META["curve"]
    assert meta["reference"]["components"] == _PREVIOUS_VERSION_META["reference"]["components"]


def test_snapshot_codec_rejects_garbage() -> None:
    snap = StreamSnapshot({"model": "m", "group": "g"}, np.zeros((2, 3)), np.ones(2))
    assert decode_snapshot(encode_snapshot(snap)).meta == {"model": "m", "group": "g"}
    for bad in (b"", b"garbage", encode_snapshot(snap)[:-1]):
        with pytest.raises(CorruptSnapshot):
            decode_snapshot(bad)


def test_sigkill_during_snapshot_writes_leaves_a_loadable_snapshot(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A writer killed at an arbitrary point of a write leaves the previous whole snapshot."""
    import signal
    import subprocess
    import sys
    import time

    writer = f"""
import numpy as np
from pathlib import Path
from rewardcal.calibration.persistence import LocalSnapshotStore, StreamSnapshot
store = LocalSnapshotStore(Path({str(tmp_path)!r}))
rng = np.random.default_rng(0)
i = 0
while True:
    i += 1
    n = 200_000  # a few MB per write: the kill lands mid-write often
    meta = {{"model": "m", "group": "g", "i": i}}
    store.save(StreamSnapshot(meta, rng.random((n, 3)), rng.random(n)))
    print(i, flush=True)
"""
    store = LocalSnapshotStore(tmp_path)
    for delay in (0.7, 1.1, 1.6):
        proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one snapshot is complete
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        snapshots = store.load_all()
        assert len(snapshots) == 1  # the last complete write, never a torn one
        assert snapshots[0].meta["i"] >= 1 and snapshots[0].raw.shape == (200_000,)


@pytest.mark.parametrize("n", [2, 3, 50, 5000])
def test_spearman_against_equals_scipy_with_ties_and_constants(n: int) -> None:
    from scipy.stats import spearmanr

    from rewardcal.calibration.curve import spearman_against

    rng = np.random.default_rng(n)
    lengths = rng.integers(1, 40, n).astype(np.float64)  # heavy ties, as lengths have
    rewards = rng.normal(size=n) + 0.05 * lengths
    rounded = np.round(rewards, 1)  # ties on the other side too
    constant = np.full(n, 0.5)
    got = spearman_against(lengths, rewards, rounded, constant)
    if n < 3:
        assert got == [None, None, None]
        return
    for value, other in zip(got[:2], (rewards, rounded), strict=True):
        assert value == pytest.approx(float(spearmanr(lengths, other).statistic), abs=1e-12)
    assert got[2] is None
    assert spearman_against(constant, rewards) == [None]


def test_plot_renders_concurrently_and_identically() -> None:
    # plot.png is rendered in worker threads: concurrent renders must not share figure state.
    from concurrent.futures import ThreadPoolExecutor

    from rewardcal.calibration.plot import render_png

    features, raw = _biased_samples(2000)
    curve = fit_curve(StreamConfig(frac=0.3, window=4096, min_samples=10), features, raw, 1)
    with ThreadPoolExecutor(8) as pool:
        images = list(pool.map(lambda _: render_png("t", features, raw, curve), range(16)))
    assert all(image.startswith(b"\x89PNG") for image in images)
    assert len(set(images)) == 1  # same data, same picture, whatever ran alongside
    empty = render_png("t", np.zeros((0, len(FEATURE_NAMES))), np.zeros(0), None)
    assert empty.startswith(b"\x89PNG") and empty != images[0]
