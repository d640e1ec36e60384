"""What the offline protocols measure on a text: characters, tokens, markdown elements.

``markdown`` counts headers, list items and bold spans with rewardcal's patterns by
default (those of the online service, ``rewardcal.features``), or with the paper's own
(``src/calibrate_*.py`` of ZeroYuHuang/Reward-Calibration) when asked: the paper's list
pattern ``^\\s*[-+*] |\\d+\\.\\s`` also counts any "digits, dot, space" inside a line
("version 2. Then"), and its bold pattern counts empty ``****`` spans; rewardcal's require
a list marker at the start of a line and text inside the bold markers.

``tokens`` is ``len(tokenizer.encode(text))`` with the tokenizer's special tokens, as the
paper's scripts measure it. The whole-text length the paper's penalty uses
(``text_len_char``) is the characters of the prompt and response rendered with the
tokenizer's chat template (:meth:`Measure.text_chars`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rewardcal.features import markdown_count
from rewardcal.offline.io import InputError

MarkdownPatterns = Literal["rewardcal", "paper"]

_PAPER_HEADER = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_PAPER_LIST = re.compile(r"^\s*[-+*] |\d+\.\s", re.MULTILINE)
_PAPER_BOLD = re.compile(r"\*\*(.*?)\*\*|__(.*?)__")


def paper_markdown_count(text: str) -> int:
    """The paper's ``count_markdown_elements``: headers + list items + bold spans."""
    return (
        len(_PAPER_HEADER.findall(text))
        + len(_PAPER_LIST.findall(text))
        + len(_PAPER_BOLD.findall(text))
    )


@dataclass
class Measure:
    """Feature values of texts; loads the tokenizer (a local path) only when needed."""

    markdown_patterns: MarkdownPatterns = "rewardcal"
    tokenizer_path: Path | None = None
    _tokenizer: Any = field(default=None, repr=False)

    def tokenizer(self, why: str) -> Any:
        if self._tokenizer is None:
            if self.tokenizer_path is None:
                raise InputError(f"{why} needs --tokenizer (a local tokenizer directory)")
            try:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer_path))
            except (OSError, ValueError) as exc:
                raise InputError(f"--tokenizer {self.tokenizer_path}: {exc}") from None
        return self._tokenizer

    def __call__(self, name: str, text: str) -> float:
        if name == "chars":
            return float(len(text))
        if name == "markdown":
            if self.markdown_patterns == "paper":
                return float(paper_markdown_count(text))
            return float(markdown_count(text))
        if name == "tokens":
            return float(len(self.tokenizer("feature tokens").encode(text)))
        raise ValueError(f"unknown feature {name!r}")

    def text_chars(self, prompt: str, response: str) -> float:
        """Characters of the whole templated conversation (the paper's text_len_char)."""
        tokenizer = self.tokenizer("--penalty-length text")
        messages = [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": response},
        ]
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
        except (ValueError, AttributeError) as exc:
            raise InputError(f"--tokenizer has no usable chat template: {exc}") from None
        return float(len(text))
