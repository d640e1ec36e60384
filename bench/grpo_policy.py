"""A tiny causal-LM policy for the GRPO calibration experiment, built offline in about a minute.

- Tokenizer: byte-level BPE of 512 tokens trained (``tokenizers``) on the AlpacaEval
  instructions and answers shipped in ``service/data``, with ``<pad>`` and ``<eos>``.
- Policy: Llama, hidden 64, 2 layers of 2 heads (head_dim 32), MLP 128, tied embeddings:
  about 115k parameters.
- Warm start: 500 supervised steps (AdamW, lr 3e-3, batch 32) on ``user: <instruction>\\n
  assistant:`` followed by the AlpacaEval answer cut to a uniform 4-64 tokens and ``<eos>``,
  loss on the answer only, so that the policy stops on its own at about the length of the
  data (what GRPO then has to keep or lose).

Everything is seeded; the same seed builds the same policy (CPU, one thread).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from rewardcal.datasets import alpacaeval_outputs

VOCAB = 512
PROMPT_MAX_TOKENS = 48
ANSWER_TOKENS = (4, 64)
WARM_STEPS = 500
WARM_BATCH = 32
WARM_LR = 3e-3
FORMAT = 1  # bump when the recipe changes: a cached build of another format is rebuilt


def prompt_text(instruction: str) -> str:
    return f"user: {instruction.strip()}\nassistant:"


def _corpus() -> list[tuple[str, str]]:
    return [(row.instruction, row.output) for row in alpacaeval_outputs()]


def build_tokenizer(pairs: list[tuple[str, str]]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = sorted({i for i, _ in pairs}) + [o for _, o in pairs]
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def training_prompts(tokenizer: Any, pairs: list[tuple[str, str]]) -> list[str]:
    """Distinct instructions whose prompt fits PROMPT_MAX_TOKENS, in a fixed order."""
    seen: set[str] = set()
    out: list[str] = []
    for instruction, _ in pairs:
        text = prompt_text(instruction)
        if text in seen or len(tokenizer(text)["input_ids"]) > PROMPT_MAX_TOKENS:
            continue
        seen.add(text)
        out.append(text)
    return out


def _new_policy(tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=32,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )


def _warm_start(model: Any, tokenizer: Any, pairs: list[tuple[str, str]], seed: int) -> float:
    """Supervised steps on answers cut to 4-64 tokens + <eos>; returns the last loss."""
    import torch

    rng = random.Random(seed)
    examples: list[tuple[list[int], list[int]]] = []
    for instruction, output in pairs:
        prompt = tokenizer(prompt_text(instruction))["input_ids"]
        if len(prompt) > PROMPT_MAX_TOKENS:
            continue
        answer = tokenizer(" " + output.strip())["input_ids"]
        cut = min(len(answer), rng.randint(*ANSWER_TOKENS))
        examples.append((prompt, answer[:cut] + [tokenizer.eos_token_id]))
    optim = torch.optim.AdamW(model.parameters(), lr=WARM_LR)
    model.train()
    loss_value = float("nan")
    for _ in range(WARM_STEPS):
        batch = rng.sample(examples, WARM_BATCH)
        width = max(len(p) + len(a) for p, a in batch)
        ids = torch.full((WARM_BATCH, width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((WARM_BATCH, width), -100, dtype=torch.long)
        mask = torch.zeros((WARM_BATCH, width), dtype=torch.long)
        for row, (p, a) in enumerate(batch):
            seq = p + a
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, len(p) : len(seq)] = torch.tensor(a)
            mask[row, : len(seq)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
        loss_value = float(loss)
    model.eval()
    return loss_value


def ensure_policy(work_dir: Path, seed: int = 0) -> tuple[Path, list[str]]:
    """The warm-started policy directory (built once per seed) and the training prompts."""
    import torch

    target = work_dir / f"policy-v{FORMAT}-seed{seed}"
    meta_path = target / "rewardcal-policy.json"
    pairs = _corpus()
    if meta_path.exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(target)
        return target, training_prompts(tokenizer, pairs)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(pairs)
    model = _new_policy(tokenizer)
    loss = _warm_start(model, tokenizer, pairs, seed)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    params = sum(p.numel() for p in model.parameters())
    meta = {"format": FORMAT, "seed": seed, "parameters": params, "warm_loss": loss}
    meta_path.write_text(json.dumps(meta, indent=1))
    return target, training_prompts(tokenizer, pairs)
