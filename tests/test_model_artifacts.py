"""Model artifacts: one loader for tokenizer, config, context length and vocabulary size,
used by every backend, and ``trust_remote_code`` reaching every loader it calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rewardcal.backends import BACKENDS, BackendStartError, create_backend
from rewardcal.config import Settings
from rewardcal.pipeline.artifacts import context_length, load_model_artifacts


def test_artifacts_state_context_and_vocabulary(tiny_models: dict[str, Path]) -> None:
    artifacts = load_model_artifacts(tiny_models["bert"])
    assert artifacts.context_length == 512
    assert artifacts.vocab_size == len(artifacts.tokenizer)
    assert artifacts.config is not None


def test_a_tokenizer_only_directory_is_enough_when_no_config_is_required(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    artifacts = load_model_artifacts(tiny_models["llama"])
    artifacts.tokenizer.save_pretrained(tmp_path)
    only = load_model_artifacts(tmp_path, config_required=False)
    assert only.config is None
    assert only.context_length == context_length(None, only.tokenizer)
    with pytest.raises(BackendStartError, match="no config.json"):
        load_model_artifacts(tmp_path)


def test_trust_remote_code_reaches_every_loader_of_the_transformers_backend(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    seen: list[tuple[str, Any]] = []
    for name in ("AutoTokenizer", "AutoConfig", "AutoModelForSequenceClassification"):
        cls = getattr(transformers, name)
        original = cls.from_pretrained

        def recording(*args: Any, _name: str = name, _orig: Any = original, **kwargs: Any) -> Any:
            seen.append((_name, kwargs.get("trust_remote_code")))
            return _orig(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", recording)
    settings = Settings(_env_file=None, trust_remote_code=True)  # type: ignore[call-arg]
    backend = create_backend(settings, tiny_models["bert"])
    backend.load()  # type: ignore[attr-defined]
    assert {name for name, _ in seen} == {
        "AutoTokenizer",
        "AutoConfig",
        "AutoModelForSequenceClassification",
    }
    assert all(flag is True for _, flag in seen)


def test_the_registry_is_the_closed_set_settings_accept() -> None:
    from typing import get_args

    from rewardcal.config import BackendName

    assert sorted(BACKENDS) == sorted(get_args(BackendName))
