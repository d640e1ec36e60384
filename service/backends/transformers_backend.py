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

from rewardcal.backends.base import BackendLimits, BackendStartError, RewardBackend
from rewardcal.pipeline.artifacts import ModelArtifacts, load_model_artifacts

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TransformersBackend(RewardBackend):
    name = "transformers"

    def __init__(
        self,
        model_path: Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        max_input_tokens: int = 512,
        trust_remote_code: bool = False,
    ) -> None:
        self._limits = BackendLimits(max_input_tokens, batches_itself=False)
        self._trust_remote_code = trust_remote_code
        self.artifacts: ModelArtifacts | None = None
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

    @property
    def limits(self) -> BackendLimits:
        return self._limits

    async def start(self, artifacts: ModelArtifacts | None = None) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.load, artifacts)

    def load(self, artifacts: ModelArtifacts | None = None) -> None:
        """Load the model (blocking); tokenizer and config from ``artifacts`` or loaded."""
        from transformers import AutoModelForSequenceClassification

        if artifacts is None:
            artifacts = load_model_artifacts(
                self._model_path, trust_remote_code=self._trust_remote_code
            )
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                self._model_path,
                config=artifacts.config,
                dtype=self._dtype,
                trust_remote_code=self._trust_remote_code,
            )
        except Exception as exc:  # noqa: BLE001 - any loader failure becomes one line
            raise BackendStartError(
                f"cannot load reward model from {self._model_path}: {exc}"
            ) from exc
        model.eval().to(self._device)
        tokenizer = artifacts.tokenizer
        text_config = model.config.get_text_config()
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        if text_config.pad_token_id is None:
            # transformers refuses batches > 1 without a pad id; our own pooling below does
            # not depend on its value.
            text_config.pad_token_id = pad_id
        self._pad_id = int(pad_id)
        self._limits = BackendLimits(
            max_input_tokens=min(self._requested_max_tokens, artifacts.context_length),
            batches_itself=False,
        )
        self._model = model
        self.artifacts = artifacts
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
