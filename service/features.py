"""Bias characteristics of a response (the paper's c(x)).

``chars`` is the paper's default (response length in characters); ``tokens`` counts
response tokens under the reward model's tokenizer; ``markdown`` counts the formatting
the paper found rewarded for its own sake: headers, list items and bold spans.
"""

from __future__ import annotations

import re

FEATURE_NAMES = ("chars", "tokens", "markdown")

_HEADER = re.compile(r"^ {0,3}#{1,6}\s", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+\S", re.MULTILINE)
_BOLD = re.compile(r"\*\*(?=\S)[^*\n]+?\*\*|__(?=\S)[^_\n]+?__")


def markdown_count(text: str) -> int:
    """Headers + list items + bold spans."""
    return len(_HEADER.findall(text)) + len(_LIST_ITEM.findall(text)) + len(_BOLD.findall(text))


def response_features(response: str, response_tokens: int) -> dict[str, float]:
    return {
        "chars": float(len(response)),
        "tokens": float(response_tokens),
        "markdown": float(markdown_count(response)),
    }
