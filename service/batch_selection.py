"""Which queued inputs go into the next forward pass.

A padded batch computes over ``batch size x longest input`` positions: every position past
an input's own length is wasted work. Batches taken in arrival order are padded to their
longest input; on real RLHF traffic (lengths from a few tokens to the truncation limit) that
wastes about half of the compute (bench/results/serving.md). So the batch is built around
the oldest queued input (which always goes first: no input starves) from the queued inputs
closest to it in length, adding at each step the one that adds the least padding, until
the token budget or the size cap is reached.

Inputs far apart in length are never put together: a batch spans lengths within a factor of
two (or ``SHORT_SLACK`` tokens, for short inputs, where the per-pass overhead batching saves
outweighs the padding). Measured on the default model on 2 CPU cores (bench/RESULTS.md):
one 512-token input costs 130 ms; padding a 32-token input (23 ms alone) to 512 to share
that pass costs more than scoring it alone.
"""

from __future__ import annotations

from collections.abc import Sequence

SHORT_SLACK = 64
"""Tokens of length spread always allowed in a batch (short inputs gain most from batching)."""


def compatible(shortest: int, longest: int) -> bool:
    """Whether inputs of these two lengths may share a padded batch."""
    return longest - shortest <= max(shortest, SHORT_SLACK)


def choose_batch(lengths: Sequence[int], max_tokens: int, max_size: int) -> list[int]:
    """Indices (into ``lengths``, in queue order) of the next batch.

    ``lengths[0]`` is the oldest queued input and is always chosen, even when it alone
    exceeds ``max_tokens``. The batch's padded cost ``len(batch) * max(lengths of batch)``
    stays within ``max_tokens`` and its size within ``max_size``.
    """
    if not lengths:
        return []
    # Sorted by length, ties by age: among equally long inputs the older ones go first.
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    anchor = order.index(0)
    lo = hi = anchor
    shortest = longest = lengths[0]
    count = 1
    while count < max_size:
        best: tuple[int, int, int] | None = None  # (added padding, age, side)
        if lo > 0:
            below = order[lo - 1]
            length = lengths[below]
            if (count + 1) * longest <= max_tokens and compatible(length, longest):
                best = (longest - length, below, -1)
        if hi + 1 < len(order):
            above = order[hi + 1]
            length = lengths[above]
            if (count + 1) * length <= max_tokens and compatible(shortest, length):
                candidate = (count * (length - longest), above, +1)
                if best is None or candidate < best:
                    best = candidate
        if best is None:
            break
        if best[2] < 0:
            lo -= 1
            shortest = lengths[order[lo]]
        else:
            hi += 1
            longest = lengths[order[hi]]
        count += 1
    return sorted(order[lo : hi + 1])
