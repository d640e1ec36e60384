"""transformers backend: AutoModelForSequenceClassification on CPU or GPU.

Batches arrive already formed by the scheduler (sorted by length). Inputs are padded on
the right whatever the tokenizer's configured side: encoders use absolute positions and
decoders derive positions from the sequence start, so right padding scores each input
exactly as it would score alone. Decoder heads (``score``) are pooled here at each input's
last real token through a forward hook, which is exact even when the pad id also occurs
inside the text (e.g. pad == eos), where transformers' own pad-id search would be off.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rewardcal.backends.base import (
    BackendLimits,
    BackendStartError,
    LocalTokenizerBackend,
    RewardBackend,
)
from rewardcal.backends.registry import register_backend
from rewardcal.config import Settings

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TransformersBackend(LocalTokenizerBackend):
    name = "transformers"

    def __init__(
        self,
        model_path: Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        max_input_tokens: int = 512,
    ) -> None:
        super().__init__(max_input_tokens, batches_itself=False)
        self._model_path = model_path
        self._device = torch.device(device)
        self._dtype = _DTYPES[dtype]
        self._requested_max_tokens = max_input_tokens
        self._model: Any = None
        self._pad_id = 0
        # One thread: forward passes are serialized (one model, one device) and never run
        # on the event loop.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="rewardcal-infer"
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.load)

    def load(self) -> None:
        """Load model and tokenizer (blocking)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not (self._model_path / "config.json").is_file():
            raise BackendStartError(f"no config.json in model path {self._model_path}")
        try:
            tokenizer = AutoTokenizer.from_pretrained(self._model_path)
            model = AutoModelForSequenceClassification.from_pretrained(
                self._model_path, dtype=self._dtype
            )
        except Exception as exc:  # noqa: BLE001 - any loader failure becomes one line
            raise BackendStartError(
                f"cannot load reward model from {self._model_path}: {exc}"
            ) from exc
        model.eval().to(self._device)
        text_config = model.config.get_text_config()
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        if text_config.pad_token_id is None:
            # transformers refuses batches > 1 without a pad id; our own pooling below does
            # not depend on its value.
            text_config.pad_token_id = pad_id
        self._pad_id = int(pad_id)
        context = _context_length(model.config, tokenizer)
        self._limits = BackendLimits(
            max_input_tokens=min(self._requested_max_tokens, context), batches_itself=False
        )
        self._model = model
        self._tokenizer = tokenizer
        self._last_token_head = _last_token_head(model)
        logger.info(
            "loaded %s (%s) on %s, context %d tokens",
            self._model_path,
            type(model).__name__,
            self._device,
            self._limits.max_input_tokens,
        )

    async def stop(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._model = None

    async def health(self) -> bool:
        return self._model is not None

    async def score(self, batch: Sequence[Sequence[int]]) -> list[float]:
        if not batch:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.forward, batch)

    @torch.inference_mode()
    def forward(self, batch: Sequence[Sequence[int]]) -> list[float]:
        """One padded forward pass (blocking); first logit of each input."""
        if self._model is None:
            raise RuntimeError("backend not started")
        lengths = [len(ids) for ids in batch]
        width = max(lengths)
        input_ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        input_ids = input_ids.to(self._device)
        attention_mask = attention_mask.to(self._device)

        if self._last_token_head is None:
            logits = self._model(input_ids=input_ids, attention_mask=attention_mask).logits
        else:
            captured: list[torch.Tensor] = []
            handle = self._last_token_head.register_forward_hook(
                lambda _module, _inputs, output: captured.append(output)
            )
            try:
                self._model(input_ids=input_ids, attention_mask=attention_mask)
            finally:
                handle.remove()
            per_position = captured[-1]  # (batch, width, num_labels)
            last = torch.as_tensor([n - 1 for n in lengths], device=per_position.device)
            logits = per_position[torch.arange(len(batch), device=per_position.device), last]
        return [float(v) for v in logits[:, 0].float().cpu()]


def _last_token_head(model: Any) -> torch.nn.Module | None:
    """The per-position score head of decoder reward models, None for encoder ones.

    Decoder ``*ForSequenceClassification`` classes (Llama, Qwen2, Mistral, Gemma, ...)
    apply a ``score`` linear layer to every position and pool the last token; encoder
    classes pool inside the model (CLS) and expose a ``classifier``.
    """
    head = getattr(model, "score", None)
    return head if isinstance(head, torch.nn.Module) else None


def _context_length(config: Any, tokenizer: Any) -> int:
    text_config = config.get_text_config()
    candidates = [
        getattr(text_config, "max_position_embeddings", None),
        getattr(tokenizer, "model_max_length", None),
    ]
    # Tokenizers without a limit report a huge sentinel (1e30).
    usable = [int(c) for c in candidates if isinstance(c, int) and 0 < c < 10**9]
    return min(usable) if usable else 2048


@register_backend("transformers")
def _create(settings: Settings, model_path: Path) -> RewardBackend:
    return TransformersBackend(
        model_path,
        device=settings.device,
        dtype=settings.dtype,
        max_input_tokens=settings.max_input_tokens,
    )
