"""AlpacaEval items as load: the shipped responses (``rewardcal.datasets``), arranged the
way a benchmark or the GPU check sends them."""

from __future__ import annotations

import random

from rewardcal.datasets import alpacaeval_items


def shuffled_items(seed: int = 0) -> list[dict[str, str]]:
    """Every item once, in an order fixed by ``seed``: each server of a comparison gets the
    same sequence, and the three models' answers are interleaved."""
    items = alpacaeval_items()
    random.Random(seed).shuffle(items)
    return items


def distinct_items(count: int, longest_first: bool = False) -> list[dict[str, str]]:
    """``count`` distinct (prompt, response) items, more than the file's rows if asked.

    Distinct on purpose: vLLM caches prefixes (on by default for last-token pooling), and a
    repeated item would be scored from the cache. Beyond the rows of the file, prompts are
    paired with other rows' responses; shared prompts are what RLHF sends anyway.
    ``longest_first``: the longest rows first (those a context limit truncates).
    """
    # A few rows repeat (two models answered "Test" to 'Write "Test"'): once each.
    rows = list(dict.fromkeys((item["prompt"], item["response"]) for item in alpacaeval_items()))
    if longest_first:
        rows.sort(key=lambda row: len(row[0]) + len(row[1]), reverse=True)
    n = len(rows)
    # k -> (prompt k % n, response (k + k // n) % n): distinct rows for k < n * n, and
    # distinct texts as long as no prompt text meets the same response twice (each
    # instruction is in up to three rows: true for far more items than a check sends).
    pairs = [(rows[k % n][0], rows[(k + k // n) % n][1]) for k in range(count)]
    if len(set(pairs)) < count:
        raise ValueError(f"{count} items asked: more than the distinct pairs this scheme makes")
    return [{"prompt": prompt, "response": response} for prompt, response in pairs]
