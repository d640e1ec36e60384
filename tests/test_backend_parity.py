"""The transformers backend scores exactly what a direct forward pass scores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardcal import formatting
from rewardcal.backends.transformers_backend import TransformersBackend

TEXTS = [
    "Short.",
    "A somewhat longer answer that explains the idea in a few more words than the first.",
    "Return the number of items in a container. " * 12,
    "x",
    "Multiple lines\n- with a list\n- and **bold** text\n# and a header",
]


def _direct_scores(
    model_path: Path, token_ids: list[list[int]], *, pool_last_token: bool = False
) -> list[float]:
    model = AutoModelForSequenceClassification.from_pretrained(model_path, dtype=torch.float32)
    model.eval()
    if pool_last_token:
        # With batch size 1 and no pad id, transformers pools position -1: the last token,
        # which is what vLLM and OpenRLHF pool.
        model.config.pad_token_id = None
    scores = []
    with torch.inference_mode():
        for ids in token_ids:  # one at a time: no padding involved at all
            logits = model(input_ids=torch.tensor([ids])).logits
            scores.append(float(logits[0, 0]))
    return scores


@pytest.mark.parametrize("arch", ["llama", "qwen2", "bert"])
def test_batched_scores_equal_unbatched_forward(arch: str, tiny_models: dict[str, Path]) -> None:
    path = tiny_models[arch]
    backend = TransformersBackend(path)
    backend.load()
    tokenizer = backend.artifacts.tokenizer
    texts = [
        formatting.render_messages(tokenizer, formatting.pair_messages("Question?", t))
        for t in TEXTS
    ]
    ids, _ = formatting.encode(tokenizer, texts, max_tokens=512)
    # The tokenizer's own call gives the same ids (the direct model(**tokenizer(...)) path).
    for text, got in zip(texts, ids, strict=True):
        expected = tokenizer(
            text, add_special_tokens=formatting.needs_special_tokens(tokenizer, text)
        )
        assert got == expected["input_ids"]
    batched = backend.forward(ids)
    direct = _direct_scores(path, ids)
    assert batched == pytest.approx(direct, abs=1e-5)
    assert len(set(round(s, 6) for s in direct)) > 1, "inputs should score differently"


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_decoder_pooling_ignores_tokenizer_padding_side_and_pad_in_text(
    arch: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """pad == eos inside the text and a left-padding tokenizer must not move the pooled token."""
    source = tiny_models[arch]
    model = AutoModelForSequenceClassification.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.eos_token_id
    target = tmp_path / arch
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)

    backend = TransformersBackend(target)
    backend.load()
    # OpenRLHF appends eos to every query: the last real token is the pad id here.
    texts = [
        formatting.render_messages(tokenizer, formatting.pair_messages("Hi", t))
        + tokenizer.eos_token
        for t in TEXTS
    ]
    ids, _ = formatting.encode(tokenizer, texts, max_tokens=512)
    assert all(ids_i[-1] == tokenizer.eos_token_id for ids_i in ids)
    expected = _direct_scores(target, ids, pool_last_token=True)
    assert backend.forward(ids) == pytest.approx(expected, abs=1e-5)
    # transformers' own pad-id search would pool the token before the trailing eos instead.
    assert _direct_scores(target, ids) != pytest.approx(expected, abs=1e-3)


def test_context_length_caps_max_input_tokens(tiny_models: dict[str, Path]) -> None:
    backend = TransformersBackend(tiny_models["bert"], max_input_tokens=100_000)
    backend.load()
    assert backend.limits.max_input_tokens == 512
    assert backend.limits.batches_itself is False


def test_missing_model_is_one_clear_error(tmp_path: Path) -> None:
    from rewardcal.backends import BackendStartError

    backend = TransformersBackend(tmp_path / "nowhere")
    with pytest.raises(BackendStartError, match="no config.json"):
        backend.load()
