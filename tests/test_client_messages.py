"""OpenAI-style messages through the client: ``content: None`` (tool-call turns) is the
empty string, never the text "None"; assistant ``tool_calls`` reach the server, which
renders them with the model's chat template (or the documented serialisation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from transformers import AutoTokenizer

from rewardcal.formatting import render_messages
from rewardcal_client import RewardClient
from tests.conftest import AppFactory
from tests.fakes import FakeBackend

CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
TOOL_TURN = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
]


def _sent_bodies(items: list[Any]) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        data = [
            {"index": i, "reward": 0.0, "raw_reward": 0.0, "bias": 0.0, "features": {}}
            for i in range(len(body["items"]))
        ]
        calibration = {"group": "default", "version": 0, "status": "warming_up", "method": "none"}
        answer = {"model": "m", "calibration": calibration, "data": data}
        return httpx.Response(
            200, json={**answer, "usage": {"prompt_tokens": 0, "total_tokens": 0}}
        )

    with RewardClient("http://rm.test", transport=httpx.MockTransport(handler)) as rm:
        rm.score(items)
    return bodies


def test_null_content_is_sent_as_empty_text_and_tool_calls_travel() -> None:
    (body,) = _sent_bodies([TOOL_TURN, [{"role": "user", "content": None}]])
    first, second = (item["messages"] for item in body["items"])
    assert first[1] == {"role": "assistant", "content": "", "tool_calls": [CALL]}
    assert second == [{"role": "user", "content": ""}]


def test_the_server_scores_null_content_as_empty_and_renders_the_call(
    make_client: AppFactory, tiny_models: dict[str, Path]
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_models["llama"])
    backend = FakeBackend(tokenizer)
    client = make_client(tiny_models["llama"], backend=backend)
    (body,) = _sent_bodies(
        [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}]]
    )
    as_sent = client.post("/v1/rewards", json=body).json()["data"][0]
    empty = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]
    as_empty = client.post("/v1/rewards", json={"items": [{"messages": empty}]}).json()["data"][0]
    assert as_sent["raw_reward"] == as_empty["raw_reward"]
    assert backend.scored_ids[0] == backend.scored_ids[1]

    (body,) = _sent_bodies([TOOL_TURN])
    scored = client.post("/v1/rewards", json=body).json()["data"][0]
    text = tokenizer.decode(backend.scored_ids[-1])
    # The tiny model's template ignores tool_calls: the documented serialisation is used.
    serialised = (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    )
    assert serialised in text and "None" not in text
    assert text == render_messages(tokenizer, TOOL_TURN)
    assert scored["features"]["chars"] == len("\n" + serialised)  # the call is the response
