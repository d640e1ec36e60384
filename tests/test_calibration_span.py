"""calibration_frac=auto, the default: the span each refit chooses, where it is shown, and
that the defaults remove the length bias of real traffic and follow a drifting policy."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy.stats import spearmanr

from rewardcal.calibration.curve import fit_curve
from rewardcal.config import Settings
from rewardcal.features import FEATURE_NAMES
from rewardcal_kernels import DEFAULT_SPANS
from tests.conftest import AppFactory
from tests.fakes import LengthBiasedBackend
from tests.test_calibration_routes import _metric, _send
from tests.traffic import alpaca_items


def test_auto_is_the_default() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.calibration.frac == "auto"
    assert settings.stream_defaults().frac == "auto"
    assert Settings(_env_file=None, calibration_frac=0.3).stream_defaults().frac == 0.3  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=r"calibration\n.*frac must be in \(0, 1\]"):
        Settings(_env_file=None, calibration_frac=1.5)  # type: ignore[call-arg]


def test_chosen_span_is_returned_stored_and_exported_as_a_metric(
    make_client: AppFactory, tiny_models: dict[str, Path], bert_tokenizer
) -> None:  # type: ignore[no-untyped-def]
    client = make_client(
        tiny_models["bert"],
        backend=LengthBiasedBackend(bert_tokenizer),
        calibration_min_samples=256,
        calibration_refit_every=100_000,
        calibration_refit_interval_s=3600,
        max_items_per_request=256,
    )
    _send(client, alpaca_items(800), "auto")
    assert client.post("/v1/calibration/auto/refit").status_code == 200
    detail = client.get("/v1/calibration/auto").json()
    assert detail["config"]["frac"] == "auto"
    span = detail["span"]
    assert span in DEFAULT_SPANS
    exported = client.get("/v1/calibration/auto/export").json()
    assert exported["curve"]["components"][0]["estimator"]["frac"] == span
    labels = {"model": "tiny-bert", "group": "auto"}
    assert _metric(client.get("/metrics").text, "rewardcal_lowess_span", **labels) == span


def _stage(stage: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rollouts of one policy stage: lengths grow by 1.6x a stage; the reward model's
    length bias (a saturating curve of the length) stays the same."""
    chars = np.round(np.exp(rng.normal(np.log(250.0 * 1.6**stage), 0.5, n)))
    bias = 1.5 * np.tanh((chars - 800.0) / 700.0)
    raw = bias + rng.standard_t(5, n) * 0.6
    features = np.zeros((n, len(FEATURE_NAMES)))
    features[:, FEATURE_NAMES.index("chars")] = chars
    return features, raw


def test_calibration_follows_a_policy_whose_lengths_drift() -> None:
    """After each refill of the (default) window with a later stage's rollouts, the refit
    curve leaves no length-reward correlation on fresh rollouts of that stage."""
    config = Settings(_env_file=None).stream_defaults()  # type: ignore[call-arg]
    rng = np.random.default_rng(13)
    col = FEATURE_NAMES.index("chars")
    spans = []
    for stage in range(5):
        window_features, window_raw = _stage(stage, config.window, rng)
        curve = fit_curve(config, window_features, window_raw, stage + 1)
        fresh_features, fresh_raw = _stage(stage, 4096, rng)
        calibrated, _ = curve.apply_arrays(fresh_features, fresh_raw)
        raw_rho = spearmanr(fresh_features[:, col], fresh_raw).statistic
        rho = spearmanr(fresh_features[:, col], calibrated).statistic
        assert raw_rho > 0.2, (stage, raw_rho)  # the bias is there to remove at every stage
        assert abs(rho) <= 0.05, (stage, rho, curve.span)
        spans.append(curve.span)
    assert all(span in DEFAULT_SPANS for span in spans)


def _alpaca_606() -> list[dict[str, str]]:
    """The 202 first AlpacaEval instructions, answered by each of the three models."""
    items = alpaca_items()
    per_model = len(items) // 3
    return [item for m in range(3) for item in items[m * per_model : m * per_model + 202]]


@pytest.mark.slow
def test_defaults_remove_the_length_bias_of_alpacaeval_on_the_default_model(
    make_client: AppFactory,
) -> None:
    """The issue's new-user check: default model, every setting at its default, 606
    responses of three LLMs of very different verbosity scored as one run, then scored
    again with observe: false once a curve is fitted (frac 1.0 left Spearman +0.23)."""
    from rewardcal.default_model import ensure_default_model

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    model = ensure_default_model(settings.cache_dir, progress=False)
    client: TestClient = make_client(model)
    items = _alpaca_606()
    first = _send(client, items, "default", batch=64)
    deadline = time.monotonic() + 120
    while client.get("/v1/calibration/default").json()["version"] < 2:
        assert time.monotonic() < deadline, "no refit after 512 observations"
        time.sleep(0.2)
    second = _send(client, items, "default", batch=64, observe=False)
    chars = [d["features"]["chars"] for d in second]
    raw_rho = spearmanr(chars, [d["raw_reward"] for d in first]).statistic
    rho = spearmanr(chars, [d["reward"] for d in second]).statistic
    assert raw_rho > 0.3
    assert abs(rho) <= 0.05, (rho, client.get("/v1/calibration/default").json()["span"])
