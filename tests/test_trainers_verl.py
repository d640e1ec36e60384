"""verl's own released reward code (0.9.1 and 0.7.1 wheels) against a live rewardcal.

The documented set-up (``reward.custom_reward_function`` pointing at
``rewardcal_client.integrations``, as ``pkg://`` and as a file path) goes through verl's own
loader and naive reward manager; verl's built-in reward-model client posts the rendered chat
to ``/classify`` naming the model by its path. Each must receive rewardcal's calibrated
reward for the same text, re-scored here with ``observe: false``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import rewardcal_client.integrations as integrations
from rewardcal_client import RewardClient
from tests import serve_process
from tests.trainer_wheels import VERL_VERSIONS, run_harness, source_root

GROUP = "verl-run"
PROMPT = [{"role": "user", "content": "Name a prime number and say why it is prime."}]
RESPONSE = "Seven is prime: its only divisors are one and seven."


@pytest.fixture(scope="module")
def server(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("verl-server")
    with serve_process.serve(tiny_models["llama"], tmp, groups=("default", GROUP)) as base:
        yield base


@pytest.mark.parametrize("version", VERL_VERSIONS)
def test_verl_receives_the_calibrated_reward(
    server: str, tiny_models: dict[str, Path], version: str
) -> None:
    got = run_harness(
        "harness_verl",
        source_root("verl", version),
        {
            "url": server,
            "group": GROUP,
            "model_path": str(tiny_models["llama"]),
            "prompt": PROMPT,
            "response": RESPONSE,
            "reward_paths": {
                "pkg": "pkg://rewardcal_client.integrations",
                "file": integrations.__file__,
            },
        },
    )
    assert got["version"] == version
    with RewardClient(server, observe=False) as rm:
        (custom,) = rm.score([(PROMPT[0]["content"], got["response_str"])], calibration_group=GROUP)
        (builtin,) = rm.score([[*PROMPT, {"role": "assistant", "content": RESPONSE}]])
    assert custom.bias != 0 and builtin.bias != 0  # calibration acted on both
    for form in ("pkg", "file"):
        assert got["custom"][form]["manager"] == "NaiveRewardManager"
        assert got["custom"][form]["score"] == pytest.approx(custom.reward, abs=1e-6), form
    # The built-in client sends templated text: the response is located in it, so it is
    # calibrated exactly like the same conversation sent as messages.
    assert got["disrm"] == pytest.approx(builtin.reward, abs=1e-6)
