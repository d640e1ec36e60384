"""Tiny reward models built offline, for the tests, the benchmarks and the GPU check.

No Hub access anywhere: a BPE (decoders) or WordPiece (encoders) tokenizer is trained with
``tokenizers`` on text that ships with Python, and a randomly initialised
``*ForSequenceClassification`` (num_labels=1) is saved next to it. Sizes follow what
vLLM's CPU attention accepts (head_dim 32). Building one takes about a second.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Literal

Arch = Literal["llama", "qwen2", "bert"]
ARCHES: tuple[Arch, ...] = ("llama", "qwen2", "bert")

DECODER_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
)
ENCODER_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
)


def training_corpus() -> list[str]:
    """Real English text that every Python ships: docstrings of builtins and stdlib modules."""
    import builtins
    import collections
    import functools
    import itertools
    import json
    import os
    import pathlib
    import re
    import string
    import textwrap

    lines: list[str] = []
    for module in (
        builtins,
        collections,
        functools,
        itertools,
        json,
        os,
        pathlib,
        re,
        string,
        textwrap,
    ):
        for name in sorted(dir(module)):
            doc = inspect.getdoc(getattr(module, name, None))
            if doc:
                lines.extend(line for line in doc.splitlines() if line.strip())
    return lines


def _train_tokenizer(arch: Arch, vocab_size: int) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = training_corpus()
    if arch == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(
            corpus, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
        )
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[
                ("[CLS]", tok.token_to_id("[CLS]")),
                ("[SEP]", tok.token_to_id("[SEP]")),
            ],
        )
        tok.decoder = decoders.WordPiece()
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
            model_max_length=512,
            chat_template=ENCODER_CHAT_TEMPLATE,
        )
    specials = ["<pad>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=512,
        chat_template=DECODER_CHAT_TEMPLATE,
    )


def build_tiny_reward_model(
    arch: Arch, out_dir: Path, *, seed: int = 0, vocab_size: int = 1000
) -> Path:
    """Build and save a tiny reward model of the given architecture; returns out_dir."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
        Qwen2Config,
        Qwen2ForSequenceClassification,
    )

    tokenizer = _train_tokenizer(arch, vocab_size)
    vocab = len(tokenizer)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=512,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,  # type: ignore[attr-defined]
    )
    model: torch.nn.Module
    if arch == "bert":
        model = BertForSequenceClassification(BertConfig(**common))
    elif arch == "llama":
        model = LlamaForSequenceClassification(
            LlamaConfig(
                **common,
                num_key_value_heads=2,
                head_dim=32,
                bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
                eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
                tie_word_embeddings=False,
            )
        )
    elif arch == "qwen2":
        model = Qwen2ForSequenceClassification(
            Qwen2Config(
                **common,
                num_key_value_heads=1,
                bos_token_id=tokenizer.bos_token_id,  # type: ignore[attr-defined]
                eos_token_id=tokenizer.eos_token_id,  # type: ignore[attr-defined]
                tie_word_embeddings=False,
            )
        )
    else:
        raise ValueError(f"unknown arch {arch!r} (known: {', '.join(ARCHES)})")
    # Random heads start near zero; a larger head spreads rewards so tests can tell inputs
    # apart.
    with torch.no_grad():
        head = model.get_submodule("classifier" if arch == "bert" else "score")
        weight = head.get_parameter("weight")
        weight.mul_(20.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)  # type: ignore[attr-defined]
    return out_dir


def build_light_twin(model_dir: Path, out_dir: Path, *, seed: int = 0) -> Path:
    """A copy of a BERT reward model with its tokenizer, chat template and context length
    but one small random layer: serving front ends (tokenization included) do exactly the
    work they do for the original while its engine answers at once (bench/frontend.py)."""
    import shutil

    import torch
    from transformers import AutoConfig, BertForSequenceClassification

    config = AutoConfig.from_pretrained(model_dir)
    if config.model_type != "bert":
        raise ValueError(f"{model_dir}: a light twin is built for BERT models only")
    config.update(
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2)
    )
    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(config).save_pretrained(out_dir)
    for path in model_dir.iterdir():
        if path.is_file() and not path.name.startswith(("model", "config", "pytorch_model")):
            shutil.copy2(path, out_dir / path.name)  # tokenizer files, chat template
    return out_dir
