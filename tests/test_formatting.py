"""From request inputs to token ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from rewardcal import formatting
from rewardcal.features import markdown_count, response_features


@pytest.fixture(scope="module")
def llama_tokenizer(tiny_models: dict[str, Path]) -> Any:
    return AutoTokenizer.from_pretrained(tiny_models["llama"])


def test_chat_template_renders_and_bos_is_not_doubled(llama_tokenizer: Any) -> None:
    text = formatting.render_messages(llama_tokenizer, formatting.pair_messages("Hi", "Hello"))
    assert text.startswith("<s>") and "Hello" in text
    assert not formatting.needs_special_tokens(llama_tokenizer, text)
    ids, _ = formatting.encode(llama_tokenizer, [text], max_tokens=512)
    assert ids[0].count(llama_tokenizer.bos_token_id) == 1


def test_plain_text_gets_special_tokens(bert_tokenizer: Any) -> None:
    ids, _ = formatting.encode(bert_tokenizer, ["plain text"], max_tokens=512)
    assert ids[0][0] == bert_tokenizer.cls_token_id and ids[0][-1] == bert_tokenizer.sep_token_id


def test_tokenizer_without_template_uses_role_lines(bert_tokenizer: Any) -> None:
    class NoTemplate:
        chat_template = None

    text = formatting.render_messages(NoTemplate(), formatting.pair_messages("Q", "A"))
    assert text == "user: Q\nassistant: A"


@pytest.mark.parametrize("side", ["left", "right"])
def test_truncation_keeps_special_tokens_and_the_chosen_end(bert_tokenizer: Any, side: str) -> None:
    text = " ".join(f"word{i}" for i in range(300))
    ids, full = formatting.encode(bert_tokenizer, [text], max_tokens=32, truncation_side=side)  # type: ignore[arg-type]
    assert len(ids[0]) == 32 and full[0] > 32
    assert ids[0][0] == bert_tokenizer.cls_token_id and ids[0][-1] == bert_tokenizer.sep_token_id
    whole, _ = formatting.encode(bert_tokenizer, [text], max_tokens=10_000)
    if side == "left":
        assert ids[0][1:-1] == whole[0][-31:-1]
    else:
        assert ids[0][1:-1] == whole[0][1:31]
    assert bert_tokenizer.truncation_side == "right"  # restored


def test_last_assistant_turn() -> None:
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "second"},
    ]
    assert formatting.last_assistant_turn(messages) == "second"
    assert formatting.last_assistant_turn(messages[:1]) == ""


def test_markdown_feature_counts_headers_lists_and_bold() -> None:
    text = "# Title\nIntro with **bold** and __also__.\n- one\n- two\n1. three\nplain - dash"
    assert markdown_count(text) == 1 + 2 + 3
    assert response_features("abc", 2) == {"chars": 3.0, "tokens": 2.0, "markdown": 0.0}
