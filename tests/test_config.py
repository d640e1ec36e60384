"""One settings object: environment, CLI flags, and refusal of bad combinations."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewardcal.calibration.config import StreamConfig
from rewardcal.cli import build_parser, main, settings_from_args
from rewardcal.config import Settings


def test_defaults_bind_loopback() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.backend == "transformers"
    assert settings.api_keys == []


def test_batch_token_budget_defaults_by_device_and_an_explicit_value_wins() -> None:
    def budget(**values: object) -> int:
        return Settings(_env_file=None, **values).batch_token_budget  # type: ignore[call-arg]

    assert budget() == 2048  # transformers on CPU: bigger batches cost more per input
    assert budget(device="cuda", dtype="bfloat16") == 16384
    assert budget(max_batch_tokens=999) == 999


def test_environment_prefix_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWARDCAL_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("REWARDCAL_API_KEYS", "sk-first-9f3, sk-second-7c1")
    monkeypatch.setenv("REWARDCAL_CALIBRATION_FEATURES", "chars,markdown")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.max_batch_size == 7
    assert [k.get_secret_value() for k in settings.api_keys] == ["sk-first-9f3", "sk-second-7c1"]
    assert "sk-first" not in repr(settings)  # keys are secrets
    assert [step.feature for step in settings.calibration.features] == ["chars", "markdown"]


def test_calibration_knobs_keep_their_flat_names_and_nest_into_one_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """REWARDCAL_CALIBRATION_<KNOB>, --calibration-<knob> and calibration_<knob>=... all
    set the one StreamConfig that new streams start from; flags beat the environment."""
    monkeypatch.setenv("REWARDCAL_CALIBRATION_FRAC", "0.3")
    monkeypatch.setenv("REWARDCAL_CALIBRATION_FEATURES", "chars, markdown")
    monkeypatch.setenv("REWARDCAL_CALIBRATION_ALPHA", "0.5")
    monkeypatch.setenv("REWARDCAL_CALIBRATION_WINDOW", "4096")
    monkeypatch.setenv("REWARDCAL_CALIBRATION_PENALTY_COEF", "0.002")
    # the service's own calibration_* settings are not knobs of the config
    monkeypatch.setenv("REWARDCAL_CALIBRATION_STORE", "memory")
    monkeypatch.setenv("REWARDCAL_CALIBRATION_MAX_GROUPS", "9")
    args = build_parser().parse_args(
        ["serve", "--calibration-window", "2048", "--calibration-standardize"]
    )
    settings = settings_from_args(args)
    config = settings.stream_defaults()
    assert config is settings.calibration
    assert config.frac == 0.3 and config.window == 2048 and config.standardize is True
    assert config.penalty_coef == 0.002
    assert [(s.feature, s.alpha) for s in config.features] == [("chars", 0.5), ("markdown", 0.5)]
    assert settings.calibration_max_groups == 9
    direct = Settings(_env_file=None, calibration_min_samples=32, calibration_alpha=2.0)  # type: ignore[call-arg]
    assert direct.calibration.min_samples == 32 and direct.calibration.window == 4096
    assert direct.calibration.features[1].alpha == 2.0


def test_every_stream_knob_is_a_setting_with_the_stream_configs_default() -> None:
    assert Settings(_env_file=None).calibration == StreamConfig()  # type: ignore[call-arg]
    args = build_parser().parse_args(
        [
            "serve",
            *("--calibration-it", "1", "--calibration-lowess-mode", "exact"),
            *("--calibration-mean-ratio", "3", "--calibration-mean-radius", "40"),
            *("--calibration-mean-min-neighbors", "7", "--calibration-clip", "2.5"),
            *("--calibration-method", "mean", "--calibration-center", "mean"),
        ]
    )
    config = settings_from_args(args).calibration
    assert (config.it, config.lowess_mode, config.method, config.center) == (
        1,
        "exact",
        "mean",
        "mean",
    )
    assert (config.mean_ratio, config.mean_radius, config.mean_min_neighbors) == (3.0, 40.0, 7)
    assert config.clip == 2.5


def test_cli_flags_override_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REWARDCAL_MAX_WAIT_MS", "3")
    args = build_parser().parse_args(
        ["serve", "--max-wait-ms", "9", "--model-path", str(tmp_path), "--protect-metrics"]
    )
    settings = settings_from_args(args)
    assert settings.max_wait_ms == 9.0
    assert settings.model_path == tmp_path
    assert settings.protect_metrics is True


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (
            ["--max-items-per-request", "100", "--max-queue", "10"],
            "max_items_per_request (100) exceeds max_queue (10)",
        ),
        (["--dtype", "float16"], "use float32 on CPU"),
        (["--workers", "2"], "workers > 1 needs a shared calibration store"),
        (["--max-batch-size", "0"], "max_batch_size: Input should be greater than 0"),
        (["--truncation", "middle"], "truncation: Input should be 'left', 'right' or 'error'"),
        (["--port", "http"], "port: Input should be a valid integer"),
        (["--calibration-frac", "1.5"], "frac must be in (0, 1] or 'auto'"),
        (
            ["--calibration-min-samples", "5000", "--calibration-window", "1000"],
            "min_samples (5000) exceeds the window (1000)",
        ),
        (["--calibration-alpha", "11"], "calibration.features.0.alpha"),
    ],
)
def test_bad_combinations_fail_with_one_line(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("rewardcal: invalid settings:")
    assert fragment in err
