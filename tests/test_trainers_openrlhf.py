"""OpenRLHF's released remote-reward code against a live rewardcal: the 0.8 batch wrapper
(one request per batch) and the >= 0.9 per-sample agent executor. OpenRLHF must receive
rewardcal's calibrated reward for the same text, re-scored here with ``observe: false``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rewardcal_client import RewardClient
from tests import serve_process
from tests.trainer_wheels import (
    OPENRLHF_BATCH_VERSION,
    OPENRLHF_SAMPLE_VERSIONS,
    run_harness,
    source_root,
)

QUESTIONS = ["What is 2+2?", "Name a colour and describe it in one sentence."]
COMPLETION = "Blue is the colour of a clear sky at noon."


@pytest.fixture(scope="module")
def server(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # OpenRLHF sends no calibration group: its traffic lands in `default`.
    with serve_process.serve(tiny_models["llama"], tmp_path_factory.mktemp("orlhf")) as base:
        yield base


def _prompts(model_path: Path) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in QUESTIONS
    ]


def test_openrlhf_08_batch_wrapper_receives_calibrated_rewards(
    server: str, tiny_models: dict[str, Path]
) -> None:
    prompts = _prompts(tiny_models["llama"])
    queries = [p + COMPLETION + "</s>" for p in prompts]
    got = run_harness(
        "harness_openrlhf",
        source_root("openrlhf", OPENRLHF_BATCH_VERSION),
        {
            "mode": "batch",
            "url": server,
            "queries": queries,
            "prompts": prompts,
            "labels": ["", ""],
        },
    )
    (answer,) = got["answers"]  # one server: the whole batch in one request
    with RewardClient(server, observe=False) as rm:
        want = rm.score_texts(queries, prompts=prompts)
    assert all(r.bias != 0 for r in want)
    assert answer["rewards"] == pytest.approx([r.reward for r in want], abs=1e-6)
    assert answer["scores"] == answer["rewards"]
    assert answer["extra_logs"]["raw_reward"] == pytest.approx([r.raw_reward for r in want])
    # The response is query[len(prompt):] without the EOS after it: what messages measure.
    assert answer["extra_logs"]["response_chars"] == [len(COMPLETION)] * 2


@pytest.mark.parametrize("version", OPENRLHF_SAMPLE_VERSIONS)
def test_openrlhf_per_sample_executor_receives_calibrated_rewards(
    server: str, tiny_models: dict[str, Path], version: str
) -> None:
    prompts = _prompts(tiny_models["llama"])
    got = run_harness(
        "harness_openrlhf",
        source_root("openrlhf", version),
        {
            "mode": "sample",
            "url": server,
            "model_path": str(tiny_models["llama"]),
            "prompts": prompts,
            "completion": COMPLETION,
        },
    )
    with RewardClient(server, observe=False) as rm:
        want = rm.score_texts([o["query"] for o in got["outputs"]], prompts=prompts)
    for output, expected in zip(got["outputs"], want, strict=True):
        assert expected.bias != 0
        assert output["reward"] == pytest.approx([expected.reward], abs=1e-6)
        assert output["scores"] == pytest.approx([expected.reward], abs=1e-6)
        assert output["extra_logs"]["raw_reward"] == pytest.approx([expected.raw_reward])
        assert output["extra_logs"]["response_chars"] == [len(COMPLETION)]
