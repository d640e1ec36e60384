"""TRL's own ``GRPOTrainer`` (trl==1.16.0, installed for tests) trains a few steps on a tiny
offline policy with rewardcal's ``make_trl_reward_func``, with string and with chat prompts.
The rewards TRL logs must be rewardcal's calibrated rewards of the completions TRL scored,
re-scored here with ``observe: false``."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rewardcal_client import RewardClient, make_trl_reward_func
from tests import serve_process

GROUP = "grpo-run"
QUESTIONS = ["What is 2+2?", "Name a colour.", "Say hello.", "Name a prime."]


@pytest.fixture(scope="module")
def server(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("trl-server")
    with serve_process.serve(tiny_models["llama"], tmp, groups=(GROUP,)) as base:
        yield base


@pytest.fixture(scope="module")
def policy(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny causal LM on the tiny reward model's tokenizer (built offline)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["llama"])
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=32,
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    out = tmp_path_factory.mktemp("tiny-policy")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


class _Recorder:
    """Passes TRL's calls through to the reward function and keeps what was scored."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.__name__ = inner.__name__
        self.calls: list[tuple[list[Any], list[Any], list[float]]] = []

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        rewards = self.inner(prompts=prompts, completions=completions, **kwargs)
        self.calls.append((list(prompts), list(completions), list(rewards)))
        return rewards


@pytest.mark.parametrize("form", ["string", "chat"])
def test_grpo_trainer_trains_on_calibrated_rewards(
    server: str, policy: Path, tmp_path: Path, form: str
) -> None:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    if form == "string":
        prompts: list[Any] = [f"user: {q}\nassistant: " for q in QUESTIONS]
    else:
        prompts = [[{"role": "user", "content": q}] for q in QUESTIONS]
    reward_fn = _Recorder(make_trl_reward_func(server, calibration_group=GROUP))
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=str(policy),
        reward_funcs=[reward_fn],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
    )
    trainer.train()

    logged = [h for h in trainer.state.log_history if "rewards/rewardcal/mean" in h]
    assert len(logged) == 2 and len(reward_fn.calls) == 2
    with RewardClient(server, calibration_group=GROUP, observe=False) as rm:
        for (seen_prompts, completions, given), log in zip(reward_fn.calls, logged, strict=True):
            if form == "string":
                texts = [p + c for p, c in zip(seen_prompts, completions, strict=True)]
                want = rm.score_texts(texts, prompts=seen_prompts)
            else:
                want = rm.score([p + c for p, c in zip(seen_prompts, completions, strict=True)])
            assert any(r.bias != 0 for r in want)
            assert given == pytest.approx([r.reward for r in want], abs=1e-6)
            # What the trainer logged (and trained on) is that calibrated reward.
            mean = statistics.fmean(r.reward for r in want)
            assert log["rewards/rewardcal/mean"] == pytest.approx(mean, abs=1e-5)
            # The raw reward and the curve version land in log_history too, per step.
            raw_mean = statistics.fmean(r.raw_reward for r in want)
            assert log["rewards/rewardcal_raw/mean"] == pytest.approx(raw_mean, abs=1e-5)
            assert log["rewards/rewardcal_raw/mean"] != pytest.approx(mean, abs=1e-5)
            assert log["calibration/rewardcal/version"] == max(r.version or 0 for r in want)
