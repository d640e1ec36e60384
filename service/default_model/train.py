"""Deterministic Bradley-Terry fine-tuning of a sequence-classification reward model.

Examples go through :mod:`rewardcal.formatting` exactly as served requests do: messages are
rendered with the tokenizer's chat template, then encoded with left truncation at
``max_tokens``. token_type_ids are all zeros (one sequence), as vLLM feeds them.

Determinism: fixed thread count, ``torch.manual_seed``, ``use_deterministic_algorithms``,
dropout off, and a batch order that depends only on the seed. The same seed, data, thread
count and machine give bit-identical weights.

Speed: pairs are sorted by length into batches (whose order is then shuffled), and inside
a batch the 2B sequences are sorted by length and run as two half-batches, so little
compute goes to padding.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from rewardcal import formatting
from rewardcal.default_model.pairs import Message, Pair
from rewardcal.default_model.recipe import TrainConfig

EncodedPair = tuple[list[int], list[int]]  # (chosen ids, rejected ids)


@dataclass
class TrainStats:
    steps: int = 0
    pairs_seen: int = 0
    tokens_seen: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    batch_accuracies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def mean_of(values: list[float], part: slice) -> float | None:
            chunk = values[part]
            return round(sum(chunk) / len(chunk), 6) if chunk else None

        tenth = max(1, len(self.losses) // 10)
        return {
            "steps": self.steps,
            "pairs_seen": self.pairs_seen,
            "tokens_seen": self.tokens_seen,
            "seconds": round(self.seconds, 2),
            "loss_first_10pct": mean_of(self.losses, slice(0, tenth)),
            "loss_last_10pct": mean_of(self.losses, slice(-tenth, None)),
            "train_accuracy_first_10pct": mean_of(self.batch_accuracies, slice(0, tenth)),
            "train_accuracy_last_10pct": mean_of(self.batch_accuracies, slice(-tenth, None)),
        }


def encode_messages(
    tokenizer: Any, conversations: Sequence[Sequence[Message]], max_tokens: int
) -> list[list[int]]:
    """Token ids of conversations, exactly as the service encodes ``messages`` inputs."""
    texts = [formatting.render_messages(tokenizer, m) for m in conversations]
    ids, _ = formatting.encode(tokenizer, texts, max_tokens=max_tokens, truncation_side="left")
    return ids


def encode_pairs(tokenizer: Any, pairs: Sequence[Pair], max_tokens: int) -> list[EncodedPair]:
    chosen = encode_messages(tokenizer, [p.chosen for p in pairs], max_tokens)
    rejected = encode_messages(tokenizer, [p.rejected for p in pairs], max_tokens)
    return list(zip(chosen, rejected, strict=True))


def make_batches(
    encoded: Sequence[EncodedPair], batch_pairs: int, rng: random.Random
) -> list[list[int]]:
    """Indices of pairs, batched by length (ties broken by a seeded shuffle), batch order
    shuffled."""
    order = list(range(len(encoded)))
    rng.shuffle(order)
    order.sort(key=lambda i: max(len(encoded[i][0]), len(encoded[i][1])))
    batches = [order[i : i + batch_pairs] for i in range(0, len(order), batch_pairs)]
    rng.shuffle(batches)
    return batches


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def forward_rewards(
    model: Any, seqs: Sequence[Sequence[int]], pad_id: int, chunks: int = 2
) -> torch.Tensor:
    """Rewards of ``seqs`` (in their order), run as ``chunks`` length-sorted sub-batches."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    size = math.ceil(len(order) / chunks)
    outputs: list[torch.Tensor] = []
    for start in range(0, len(order), size):
        part = [seqs[i] for i in order[start : start + size]]
        outputs.append(model(**_pad(part, pad_id)).logits[:, 0])
    sorted_rewards = torch.cat(outputs)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    return sorted_rewards[inverse]


@contextlib.contextmanager
def deterministic_torch(threads: int, seed: int) -> Iterator[None]:
    """Fixed threads, seeded RNG and deterministic kernels; restores the previous settings."""
    previous_threads = torch.get_num_threads()
    previous_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_det)


def default_threads() -> int:
    """Training threads: ``REWARDCAL_BUILD_THREADS``, else 2 (the reference build)."""
    value = os.environ.get("REWARDCAL_BUILD_THREADS", "").strip()
    return max(1, int(value)) if value else 2


def disable_dropout(model: Any) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    config = model.config
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
        if hasattr(config, name):
            setattr(config, name, 0.0)


def _freeze(model: Any, frozen_layers: int) -> None:
    if frozen_layers <= 0:
        return
    base = model.base_model
    base.embeddings.requires_grad_(False)
    for layer in base.encoder.layer[:frozen_layers]:
        layer.requires_grad_(False)


def _lr_lambda(total_steps: int, warmup_fraction: float) -> Any:
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def train_bradley_terry(
    model: Any,
    encoded: Sequence[EncodedPair],
    config: TrainConfig,
    *,
    pad_id: int,
    progress: bool = True,
    description: str = "training reward model",
) -> TrainStats:
    """Fine-tune ``model`` (a ``*ForSequenceClassification`` with one label) in place with
    the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected), one AdamW step per batch.

    Call inside :func:`deterministic_torch` for reproducible weights. The classification
    head is re-initialised from the seed.
    """
    from tqdm.auto import tqdm

    rng = random.Random(config.seed)
    disable_dropout(model)
    head = model.classifier if hasattr(model, "classifier") else model.score
    generator = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        for name, param in head.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * config.head_init_std)
    _freeze(model, config.frozen_layers)
    model.train()

    batches = [
        b for _ in range(config.epochs) for b in make_batches(encoded, config.batch_pairs, rng)
    ]
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        foreach=False,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(len(batches), config.warmup_fraction)
    )
    stats = TrainStats()
    started = time.perf_counter()
    bar = tqdm(batches, desc=description, unit="batch", disable=not progress, mininterval=1.0)
    for batch in bar:
        chosen = [encoded[i][0] for i in batch]
        rejected = [encoded[i][1] for i in batch]
        rewards = forward_rewards(model, chosen + rejected, pad_id)
        margin = rewards[: len(batch)] - rewards[len(batch) :]
        loss = -F.logsigmoid(margin).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        stats.steps += 1
        stats.pairs_seen += len(batch)
        stats.tokens_seen += sum(len(s) for s in chosen + rejected)
        stats.losses.append(float(loss.detach()))
        stats.batch_accuracies.append(float((margin.detach() > 0).float().mean()))
        if progress and stats.steps % 10 == 0:
            recent = stats.losses[-20:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}")
    bar.close()
    stats.seconds = time.perf_counter() - started
    model.eval()
    for param in model.parameters():
        param.requires_grad_(True)
    return stats


@torch.no_grad()
def score_sequences(
    model: Any,
    seqs: Sequence[Sequence[int]],
    *,
    pad_id: int,
    batch_size: int = 32,
    progress: bool = False,
    description: str = "scoring",
) -> list[float]:
    """Raw rewards of token-id sequences (eval mode, length-sorted batches, input order)."""
    from tqdm.auto import tqdm

    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    rewards = [0.0] * len(seqs)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc=description, unit="batch", disable=not progress):
        idx = order[start : start + batch_size]
        out = model(**_pad([seqs[i] for i in idx], pad_id)).logits[:, 0]
        for i, value in zip(idx, out.tolist(), strict=True):
            rewards[i] = float(value)
    return rewards


def pairwise_accuracy(
    model: Any, encoded: Sequence[EncodedPair], *, pad_id: int, progress: bool = False
) -> tuple[float, list[float]]:
    """Fraction of pairs with r_chosen > r_rejected, and the margins."""
    flat = [c for c, _ in encoded] + [r for _, r in encoded]
    rewards = score_sequences(model, flat, pad_id=pad_id, progress=progress)
    n = len(encoded)
    margins = [rewards[i] - rewards[n + i] for i in range(n)]
    accuracy = sum(m > 0 for m in margins) / n if n else float("nan")
    return accuracy, margins


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return asdict(config)
