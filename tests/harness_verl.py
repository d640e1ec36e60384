"""Child process: verl's released reward code against a live rewardcal (see test_trainers_verl).

Reads a JSON request on stdin; runs (1) verl's custom-reward-function loader and naive
reward manager with the documented config, for each given form of the path, and (2) verl's
built-in discriminative reward client (``/classify``); prints what verl received as JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tests import trainer_stubs

# Ray and the GPU-only rollout/worker machinery; codetiming and orjson are small utilities
# imported by verl's profiler and data paths that the reward path never calls.
trainer_stubs.install(
    ["ray", "verl.single_controller.ray", "verl.workers.rollout.replica", "codetiming", "orjson"]
)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import verl  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker  # noqa: E402
from verl.trainer.ppo.reward import load_reward_manager  # noqa: E402
from verl.utils.ray_utils import get_event_loop  # noqa: E402


def _objects(*values: Any) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


def _sample(tokenizer: Any, prompt: list[dict[str, str]], response: str) -> DataProto:
    """One rollout as verl's reward loop receives it: left-padded prompt ids, right-padded
    response ids ending in EOS, the attention mask over both, and the non-tensor fields."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "input_ids"):
        prompt_ids = prompt_ids["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]
    pad = tokenizer.pad_token_id
    prompt_t = torch.tensor([[pad] * 2 + list(prompt_ids)])
    response_t = torch.tensor([response_ids + [pad] * 3])
    mask = torch.cat(
        [
            torch.tensor([[0] * 2 + [1] * len(prompt_ids)]),
            torch.tensor([[1] * len(response_ids) + [0] * 3]),
        ],
        dim=1,
    )
    return DataProto.from_dict(
        tensors={"prompts": prompt_t, "responses": response_t, "attention_mask": mask},
        non_tensors={
            "data_source": _objects("rewardcal-test"),
            "reward_model": _objects({"ground_truth": ""}),
            "extra_info": _objects({"question": prompt[-1]["content"]}),
            "raw_prompt": _objects(prompt),
        },
    )


def _config(reward_overrides: list[str], model_path: str) -> Any:
    """verl's own reward config (reward/reward.yaml in the wheel) with the user's overrides,
    under the ``reward.`` keys verl migrates legacy settings to."""
    reward = OmegaConf.load(f"{verl.__path__[0]}/trainer/config/reward/reward.yaml")
    base = OmegaConf.create(
        {
            "reward": reward,
            "actor_rollout_ref": {"model": {"path": model_path, "tokenizer_path": None}},
        }
    )
    return OmegaConf.merge(base, OmegaConf.from_dotlist(reward_overrides))


def main() -> None:
    request = json.load(sys.stdin)
    tokenizer = AutoTokenizer.from_pretrained(request["model_path"])
    prompt = request["prompt"]
    data = _sample(tokenizer, prompt, request["response"])
    loop = get_event_loop()
    out: dict[str, Any] = {"version": verl.__version__, "custom": {}}

    for form, path in request["reward_paths"].items():
        config = _config(
            [
                f"reward.custom_reward_function.path={path}",
                "reward.custom_reward_function.name=compute_score",
                f"reward.custom_reward_function.reward_kwargs.url={request['url']}",
                "reward.custom_reward_function.reward_kwargs.calibration_group=" + request["group"],
            ],
            request["model_path"],
        )
        manager = load_reward_manager(config, tokenizer)
        result = loop.run_until_complete(manager.run_single(data))
        out["custom"][form] = {
            "manager": type(manager).__name__,
            "score": float(result["reward_score"]),
        }

    # verl's built-in reward-model client: renders the reward model's chat template and
    # posts the text to /classify with the model named by its path.
    worker = RewardLoopWorker.__new__(RewardLoopWorker)
    worker.config = _config(
        [
            "reward.reward_model.enable=true",
            "reward.reward_model.rollout.name=vllm",
            f"reward.reward_model.model_path={request['model_path']}",
        ],
        request["model_path"],
    )
    worker.reward_router_address = request["url"].removeprefix("http://")
    worker.input_tokenizer = tokenizer
    worker.reward_model_tokenizer = tokenizer
    worker.loop = loop
    disrm = loop.run_until_complete(worker.compute_score_disrm(data))
    out["disrm"] = float(disrm["reward_score"])
    out["response_str"] = tokenizer.decode(
        tokenizer(request["response"], add_special_tokens=False)["input_ids"],
        skip_special_tokens=True,
    )
    trainer_stubs.answer(out, json.dumps)


if __name__ == "__main__":
    main()
