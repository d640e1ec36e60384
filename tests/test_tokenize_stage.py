"""The tokenize stage: batched encodes give the ids one text alone gets, nothing of the
shared tokenizer changes, token-id inputs keep their special tokens, features only as asked,
and one request's bad input fails that request alone."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from rewardcal import formatting
from rewardcal.errors import ServiceError
from rewardcal.pipeline.tokenize import ScoreInput, TokenizeStage

WORDS = "the cat sat on a mat while seven quick brown foxes jumped over lazy dogs".split()


def _texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 900))) for _ in range(count)]


@pytest.mark.parametrize("side", ["left", "right"])
async def test_concurrent_requests_get_the_ids_each_text_gets_alone(
    tiny_models: dict[str, Any], side: str
) -> None:
    from transformers import AutoTokenizer

    for arch in ("bert", "llama"):
        tokenizer = AutoTokenizer.from_pretrained(tiny_models[arch])
        stage = TokenizeStage(tokenizer, truncation=side, workers=2)
        texts = _texts(40)
        try:
            results = await asyncio.gather(
                *(stage.prepare([ScoreInput(text=t)], 128, frozenset()) for t in texts)
            )
        finally:
            stage.close()
        for text, prepared in zip(texts, results, strict=True):
            alone = formatting.encode_one(tokenizer, text, 128, side)  # type: ignore[arg-type]
            assert prepared.token_ids == [alone.ids], (arch, text[:40])


async def test_the_shared_tokenizer_is_never_reconfigured(bert_tokenizer: Any) -> None:
    before = bert_tokenizer.backend_tokenizer.truncation, bert_tokenizer.truncation_side
    stage = TokenizeStage(bert_tokenizer, truncation="left")
    try:
        await stage.prepare([ScoreInput(text=t) for t in _texts(8)], 16, frozenset())
    finally:
        stage.close()
    assert (bert_tokenizer.backend_tokenizer.truncation, bert_tokenizer.truncation_side) == before


async def test_token_id_inputs_keep_cls_and_sep_when_truncated(bert_tokenizer: Any) -> None:
    ids = bert_tokenizer(" ".join(WORDS * 10))["input_ids"]
    stage = TokenizeStage(bert_tokenizer, truncation="left")
    try:
        prepared = await stage.prepare([ScoreInput(token_ids=tuple(ids))], 12, frozenset())
    finally:
        stage.close()
    kept = prepared.token_ids[0]
    assert len(kept) == 12
    assert kept[0] == bert_tokenizer.cls_token_id and kept[-1] == bert_tokenizer.sep_token_id
    assert kept[1:-1] == ids[-11:-1]  # left truncation keeps the end of the body


async def test_features_are_computed_as_asked(bert_tokenizer: Any) -> None:
    stage = TokenizeStage(bert_tokenizer, truncation="left")
    item = ScoreInput(text="prompt and **bold** answer", response="**bold** answer")
    try:
        chars = await stage.prepare([item], 64, frozenset({"chars"}))
        every = await stage.prepare([item], 64, frozenset({"chars", "tokens", "markdown"}))
    finally:
        stage.close()
    assert chars.features == [{"chars": 15.0}]
    tokens = len(bert_tokenizer("**bold** answer", add_special_tokens=False)["input_ids"])
    assert every.features == [{"chars": 15.0, "tokens": float(tokens), "markdown": 1.0}]


async def test_a_bad_input_fails_its_own_request_only(bert_tokenizer: Any) -> None:
    stage = TokenizeStage(bert_tokenizer, truncation="left")
    try:
        bad, good = await asyncio.gather(
            # A limit of one token leaves no room beside [CLS] and [SEP].
            stage.prepare([ScoreInput(text=" ".join(WORDS))], 1, frozenset()),
            stage.prepare([ScoreInput(text="fine")], 64, frozenset()),
            return_exceptions=True,
        )
    finally:
        stage.close()
    assert isinstance(bad, ServiceError) and "input 0" in bad.message
    assert not isinstance(good, BaseException) and len(good.token_ids) == 1


async def test_a_pass_mixing_requests_with_and_without_offsets_keeps_each_answer(
    bert_tokenizer: Any,
) -> None:
    """Only requests that count ``tokens`` need character offsets (the encode without them
    is cheaper); one pass serving both gives each the ids and features it gets alone."""
    texts = _texts(24, seed=3)
    inputs = [ScoreInput(text=t, response=t[len(t) // 2 :]) for t in texts]
    wants = [frozenset({"chars", "tokens"}) if i % 2 else frozenset({"chars"}) for i in range(24)]
    stage = TokenizeStage(bert_tokenizer, truncation="right")
    try:
        mixed = await asyncio.gather(
            *(stage.prepare([x], 256, w) for x, w in zip(inputs, wants, strict=True))
        )
        alone = [await stage.prepare([x], 256, frozenset({"chars", "tokens"})) for x in inputs]
    finally:
        stage.close()
    for got, ref, want in zip(mixed, alone, wants, strict=True):
        assert got.token_ids == ref.token_ids
        assert got.features == [{k: v for k, v in ref.features[0].items() if k in want}]
