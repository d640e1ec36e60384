"""Child process: OpenRLHF's released remote-reward code against a live rewardcal (see
test_trainers_openrlhf). Reads a JSON request on stdin, prints what OpenRLHF received.

- ``batch`` (0.8): ``RemoteRewardModel.get_rewards`` -> ``remote_rm_fn_ray`` ->
  ``request_api_wrapper``, one request for the whole batch;
- ``sample`` (>= 0.9): ``SingleTurnAgentExecutor.execute`` tokenizes the prompt, takes a
  generation from the engine (a stand-in returning fixed tokens) and posts the decoded
  prompt + completion, one request per sample.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests import trainer_stubs

trainer_stubs.install(["ray"])


def _bare_packages() -> None:
    import importlib.util

    spec = importlib.util.find_spec("openrlhf")  # a top-level lookup runs no __init__
    assert spec is not None and spec.submodule_search_locations is not None
    package = Path(list(spec.submodule_search_locations)[0])
    # openrlhf/__init__ and openrlhf/utils/__init__ import the training stack (deepspeed,
    # flash-attn, math graders); the reward modules only need logging_utils next to them.
    trainer_stubs.package_without_init("openrlhf", str(package))
    trainer_stubs.package_without_init("openrlhf.utils", str(package / "utils"))


class _Engine:
    """Stands in for OpenRLHF's vLLM engine: 'generates' the given token ids."""

    def __init__(self, token_ids: list[int]) -> None:
        self.token_ids = token_ids

    async def generate(self, prompt_token_ids: list[int], params: Any, **_: Any) -> Any:
        output = SimpleNamespace(token_ids=self.token_ids, finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[output])


def main() -> None:
    request = json.load(sys.stdin)
    _bare_packages()
    url = request["url"] + "/get_reward"
    if request["mode"] == "batch":
        from openrlhf.utils.remote_rm_utils import RemoteRewardModel

        args = SimpleNamespace(micro_rollout_batch_size=8)
        model = RemoteRewardModel.remote(args, url)
        answers = model.get_rewards.remote(
            request["queries"], request["prompts"], request["labels"]
        )
        trainer_stubs.answer({"answers": answers}, json.dumps)
        return

    from openrlhf.utils.agent import SingleTurnAgentExecutor
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(request["model_path"])
    completion = tokenizer(request["completion"], add_special_tokens=False)["input_ids"]
    engine = _Engine([*completion, tokenizer.eos_token_id])
    executor = SingleTurnAgentExecutor(url)
    params = SimpleNamespace(max_tokens=64, logprobs=None)
    outputs = []
    for prompt in request["prompts"]:
        out = asyncio.run(executor.execute(prompt, "", params, 512, tokenizer, engine))
        query = tokenizer.decode(out["observation_tokens"], skip_special_tokens=False)
        outputs.append(
            {
                "query": query,
                "reward": out["reward"],
                "scores": out["scores"],
                "extra_logs": out["extra_logs"],
            }
        )
    trainer_stubs.answer({"outputs": outputs}, json.dumps)


if __name__ == "__main__":
    main()
