"""The embedded default reward model: all-MiniLM-L6-v2 fine-tuned with a Bradley-Terry loss
on preference pairs shipped in ``service/data/``, built on first use into a cache directory.

    from rewardcal.default_model import ensure_default_model
    model_dir = ensure_default_model(Path("~/.cache/rewardcal").expanduser())

Heavy imports (torch, transformers) happen only when a model is built.
"""

from rewardcal.default_model.build import (
    CHAT_TEMPLATE,
    DEFAULT_MODEL_NAME,
    MARKER_FILE,
    build_default_model,
    default_model_dir,
    ensure_default_model,
    is_complete,
    is_current,
    read_metadata,
)

__all__ = [
    "CHAT_TEMPLATE",
    "DEFAULT_MODEL_NAME",
    "MARKER_FILE",
    "build_default_model",
    "default_model_dir",
    "ensure_default_model",
    "is_complete",
    "is_current",
    "read_metadata",
]
