"""The response inside chat-templated text is located with the template itself, so text
routes (/classify, /pooling, /get_reward without prompts) calibrate on the same length as
the messages path for the same conversation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from benchkit.tiny_models import DECODER_CHAT_TEMPLATE
from rewardcal.default_model import CHAT_TEMPLATE as DEFAULT_MODEL_TEMPLATE
from rewardcal.formatting import render_messages
from rewardcal.templated import ResponseLocator
from tests import chat_templates
from tests.conftest import AppFactory
from tests.fakes import LengthBiasedBackend

TEMPLATES = {
    **chat_templates.FAMILIES,
    "tiny-decoder": DECODER_CHAT_TEMPLATE,
    "default-model": DEFAULT_MODEL_TEMPLATE,
}

CONVERSATION = [
    {"role": "user", "content": "What is the capital of France? Answer briefly."},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy? Say a little more this time."},
    {"role": "assistant", "content": "Rome, the capital of Italy since 1871, on the Tiber."},
]
RESPONSE = CONVERSATION[-1]["content"]


def _tokenizer(tiny_models: dict[str, Path], template: str) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["llama"])
    tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_the_response_is_found_in_rendered_and_generated_text(
    tiny_models: dict[str, Path], family: str
) -> None:
    tokenizer = _tokenizer(tiny_models, TEMPLATES[family])
    locator = ResponseLocator(tokenizer)
    rendered = render_messages(tokenizer, CONVERSATION)
    found = locator.locate(rendered)
    assert found.located and found.response == RESPONSE, (rendered, locator.affixes)

    # What a trainer sends after generating: generation prompt + completion + EOS.
    if family in ("mistral", "default-model", "tiny-decoder"):
        return  # no generation prompt in these templates; the rendered form covers them
    prompt = tokenizer.apply_chat_template(
        CONVERSATION[:-1], tokenize=False, add_generation_prompt=True
    )
    generated = locator.locate(prompt + RESPONSE + tokenizer.eos_token)
    assert generated.located
    # Qwen3 renders an empty thinking block into the final turn, not into the prompt.
    assert generated.response == RESPONSE


def test_a_template_that_marks_no_turns_falls_back_to_the_whole_text(
    tiny_models: dict[str, Path],
) -> None:
    tokenizer = _tokenizer(tiny_models, chat_templates.UNMARKED)
    text = render_messages(tokenizer, CONVERSATION)
    found = ResponseLocator(tokenizer).locate(text)
    assert not found.located and found.response == text


def _fit_curve(client: Any) -> None:
    conversations = [
        [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": r}]
        for i, r in enumerate("word " * (1 + i % 17) for i in range(40))
    ]
    body = {"items": [{"messages": c} for c in conversations], "calibration_group": "t"}
    assert client.post("/v1/rewards", json=body).status_code == 200
    deadline = time.monotonic() + 30
    while client.get("/v1/calibration/t").json()["version"] < 1:
        assert time.monotonic() < deadline, "no curve was fitted"
        time.sleep(0.05)


@pytest.mark.parametrize("family", ["llama3", "qwen3", "gemma2", "mistral"])
def test_text_routes_calibrate_like_the_messages_path(
    make_client: AppFactory, tiny_models: dict[str, Path], family: str
) -> None:
    tokenizer = _tokenizer(tiny_models, TEMPLATES[family])
    client = make_client(
        tiny_models["llama"],
        backend=LengthBiasedBackend(tokenizer),
        calibration_min_samples=20,
        calibration_refit_every=10,
    )
    _fit_curve(client)
    text = render_messages(tokenizer, CONVERSATION)
    opts = {"calibration_group": "t", "observe": False}

    native = client.post("/v1/rewards", json={"items": [{"messages": CONVERSATION}], **opts})
    (want,) = native.json()["data"]
    assert want["features"]["chars"] == len(RESPONSE)
    assert want["bias"] != 0  # a real curve: equal rewards below mean equal lengths

    openrlhf = client.post("/get_reward", json={"query": [text], **opts}).json()
    assert openrlhf["extra_logs"]["response_chars"] == [len(RESPONSE)]
    assert openrlhf["extra_logs"]["response_located"] == [1.0]
    assert openrlhf["rewards"] == pytest.approx([want["reward"]], abs=1e-9)

    for route in ("/classify", "/pooling"):
        body = {"input": text, "use_activation": False, **opts}
        (got,) = client.post(route, json=body).json()["data"]
        assert got["response_located"] is True
        assert got["raw_reward"] == pytest.approx(want["raw_reward"], abs=1e-9)
        assert got["reward"] == pytest.approx(want["reward"], abs=1e-9)
        assert got["probs"] == pytest.approx([want["reward"]], abs=1e-9)

    # Token ids rendered the same way are located too (special tokens kept while decoding).
    ids = tokenizer(text, add_special_tokens=not text.startswith(tokenizer.bos_token))
    (got,) = client.post("/classify", json={"input": ids["input_ids"], **opts}).json()["data"]
    assert got["response_located"] is True
    assert got["reward"] == pytest.approx(want["reward"], abs=1e-9)


def test_an_unlocatable_response_is_reported_and_counted(
    make_client: AppFactory, tiny_models: dict[str, Path]
) -> None:
    tokenizer = _tokenizer(tiny_models, chat_templates.UNMARKED)
    client = make_client(tiny_models["llama"], backend=LengthBiasedBackend(tokenizer))
    text = render_messages(tokenizer, CONVERSATION)
    (got,) = client.post("/classify", json={"input": text}).json()["data"]
    assert got["response_located"] is False
    logs = client.post("/get_reward", json={"query": [text, text]}).json()["extra_logs"]
    assert logs["response_located"] == [0.0, 0.0] and logs["response_chars"] == [len(text)] * 2
    metrics = client.get("/metrics").text
    assert 'rewardcal_templated_responses_total{located="false",model="tiny-llama"} 3.0' in metrics


def test_tool_calls_are_rendered_by_a_template_that_supports_them(
    tiny_models: dict[str, Path],
) -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
    ]
    with_tools = render_messages(_tokenizer(tiny_models, chat_templates.WITH_TOOLS), messages)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in with_tools
    assert "None" not in with_tools

    # A template without tool support gets the documented serialisation in the content.
    plain = render_messages(_tokenizer(tiny_models, chat_templates.LLAMA3), messages)
    assert (
        '<|start_header_id|>assistant<|end_header_id|>\n\n<tool_call>\n{"name": '
        '"get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|eot_id|>'
    ) in plain


def test_a_response_cut_by_prompt_loses_the_end_of_turn_that_follows_it(
    make_client: AppFactory, tiny_models: dict[str, Path]
) -> None:
    tokenizer = _tokenizer(tiny_models, chat_templates.QWEN2)
    client = make_client(tiny_models["llama"], backend=LengthBiasedBackend(tokenizer))
    prompt = tokenizer.apply_chat_template(
        CONVERSATION[:-1], tokenize=False, add_generation_prompt=True
    )
    for ending in ("<|im_end|>\n", "<|im_end|>", tokenizer.eos_token, ""):
        body = {"query": [prompt + RESPONSE + ending], "prompts": [prompt]}
        logs = client.post("/get_reward", json=body).json()["extra_logs"]
        assert logs["response_chars"] == [len(RESPONSE)], ending
