"""What every backend and the tokenize stage need from a model directory, loaded once.

The tokenizer (chat template included), the config, the context length and the vocabulary
size: one loader, honouring ``trust_remote_code``, instead of one copy per backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewardcal.backends.base import BackendStartError

UNBOUNDED = 10**9
"""Tokenizers without a limit report a huge sentinel (1e30); below this a limit is real."""
DEFAULT_CONTEXT = 2048
"""Context assumed when neither the config nor the tokenizer states one."""


@dataclass(frozen=True)
class ModelArtifacts:
    path: Path
    tokenizer: Any
    config: Any | None
    """None for a tokenizer-only directory (the remote backend needs no weights)."""
    context_length: int
    vocab_size: int


def context_length(config: Any | None, tokenizer: Any) -> int:
    """The longest input the model takes: its position embeddings, capped by the tokenizer's
    stated limit."""
    candidates = [getattr(tokenizer, "model_max_length", None)]
    if config is not None:
        candidates.append(getattr(config.get_text_config(), "max_position_embeddings", None))
    usable = [int(c) for c in candidates if isinstance(c, int) and 0 < c < UNBOUNDED]
    if usable:
        return min(usable)
    return DEFAULT_CONTEXT if config is not None else UNBOUNDED


def load_model_artifacts(
    path: Path, *, trust_remote_code: bool = False, config_required: bool = True
) -> ModelArtifacts:
    """Load tokenizer and config (blocking); raise BackendStartError with one line."""
    from transformers import AutoConfig, AutoTokenizer

    if config_required and not (path / "config.json").is_file():
        raise BackendStartError(f"no config.json in model path {path}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one line
        raise BackendStartError(
            f"cannot load reward model from {path}: its tokenizer: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        config: Any = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        if config_required:
            raise BackendStartError(
                f"cannot load reward model from {path}: its config: {type(exc).__name__}: {exc}"
            ) from exc
        config = None  # a tokenizer-only directory is enough for the remote backend
    return ModelArtifacts(
        path=path,
        tokenizer=tokenizer,
        config=config,
        context_length=context_length(config, tokenizer),
        vocab_size=len(tokenizer),
    )
