"""The one loader of the shipped AlpacaEval responses (rewardcal.datasets)."""

from __future__ import annotations

from collections import Counter

from rewardcal.datasets import alpacaeval_items, alpacaeval_outputs


def test_the_alpacaeval_outputs_are_three_models_answering_the_same_805_instructions() -> None:
    outputs = alpacaeval_outputs()
    assert len(outputs) == 2415
    by_model = Counter(o.generator for o in outputs)
    assert by_model == {"alpaca-7b": 805, "claude-2": 805, "gpt4_1106_preview": 805}
    for model in by_model:
        rows = [o for o in outputs if o.generator == model]
        assert sorted(o.index for o in rows) == list(range(805))
    # The same instruction under the same index for every model (what pairs them up).
    first = {o.generator: o.instruction for o in outputs if o.index == 0}
    assert len(set(first.values())) == 1
    assert all(o.output.strip() for o in outputs)


def test_items_are_reward_requests_in_file_order_and_limit_reads_the_first_rows() -> None:
    items = alpacaeval_items(3)
    outputs = alpacaeval_outputs(3)
    assert items == [{"prompt": o.instruction, "response": o.output} for o in outputs]
    assert outputs == alpacaeval_outputs()[:3]
