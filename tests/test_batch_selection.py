"""Choosing the next batch from the queue: budget, size cap, padding, no starvation."""

from __future__ import annotations

import random
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from rewardcal.batch_selection import SHORT_SLACK, choose_batch, compatible
from rewardcal.datasets import alpacaeval_outputs
from rewardcal.scheduler import padded_cost

Chooser = Callable[[list[int], int, int], list[int]]


def _drain(lengths: list[int], choose: Chooser, max_tokens: int, max_size: int) -> list[list[int]]:
    """Serve a queue of inputs batch after batch; the batches, as lengths."""
    queue = list(lengths)
    batches = []
    while queue:
        chosen = choose(queue, max_tokens, max_size)
        assert chosen and chosen[0] == 0  # the oldest input is always in the next batch
        batches.append([queue[i] for i in chosen])
        queue = [n for i, n in enumerate(queue) if i not in set(chosen)]
    return batches


def _arrival_order(lengths: list[int], max_tokens: int, max_size: int) -> list[int]:
    """The previous policy: a prefix of the queue, as long as it fits."""
    longest = 0
    for i, n in enumerate(lengths):
        longest = max(longest, n)
        if i and (padded_cost(i + 1, longest) > max_tokens or i + 1 > max_size):
            return list(range(i))
    return list(range(len(lengths)))


def test_the_oldest_input_goes_first_even_over_budget() -> None:
    assert choose_batch([900, 10, 12], max_tokens=512, max_size=8) == [0]
    assert choose_batch([7], max_tokens=512, max_size=8) == [0]
    assert choose_batch([], max_tokens=512, max_size=8) == []


def test_similar_lengths_are_batched_together() -> None:
    lengths = [300, 20, 290, 25, 310, 30, 600]
    assert choose_batch(lengths, max_tokens=1000, max_size=8) == [0, 2, 4]
    # The short ones make the next batch once the head has been served.
    assert choose_batch([20, 25, 30, 600], max_tokens=1000, max_size=8) == [0, 1, 2]


def test_equal_lengths_are_taken_oldest_first() -> None:
    assert choose_batch([50] * 6, max_tokens=10_000, max_size=3) == [0, 1, 2]


def test_inputs_far_apart_in_length_never_share_a_batch() -> None:
    assert choose_batch([512, 30], max_tokens=100_000, max_size=8) == [0]
    assert choose_batch([40, 100], max_tokens=100_000, max_size=8) == [0, 1]  # short: slack
    assert compatible(200, 400) and not compatible(200, 401)
    assert compatible(1, 1 + SHORT_SLACK) and not compatible(1, 2 + SHORT_SLACK)


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 600), min_size=1, max_size=80),
    max_tokens=st.integers(1, 4096),
    max_size=st.integers(1, 40),
)
def test_every_batch_respects_budget_cap_and_spread(
    lengths: list[int], max_tokens: int, max_size: int
) -> None:
    batches = _drain(lengths, choose_batch, max_tokens, max_size)
    assert sorted(n for b in batches for n in b) == sorted(lengths)  # each input once
    for batch in batches:
        assert len(batch) <= max_size
        assert len(batch) == 1 or padded_cost(len(batch), max(batch)) <= max_tokens
        assert compatible(min(batch), max(batch))


def test_less_padding_than_arrival_order_on_real_traffic() -> None:
    # AlpacaEval responses, ~4 characters a token, truncated at 512 as the service does:
    # a v0.9 trainer's burst of 64 one-sample requests.
    outputs = alpacaeval_outputs()
    rng = random.Random(0)
    for _ in range(5):
        burst = [min(512, 8 + len(o.output) // 4) for o in rng.sample(outputs, 64)]
        useful = sum(burst)
        ours = _drain(burst, choose_batch, 2048, 32)
        before = _drain(burst, _arrival_order, 2048, 32)
        waste_ours = sum(padded_cost(len(b), max(b)) for b in ours) - useful
        waste_before = sum(padded_cost(len(b), max(b)) for b in before) - useful
        assert waste_ours < 0.2 * waste_before, (waste_ours, waste_before)
        assert waste_ours < 0.15 * useful  # arrival order: 60-100%
