"""Preference pairs the default reward model is trained and checked on.

Two sources, both shipped in ``service/data/``:

- ``docstrings``: pairs generated from Python standard-library docstrings by
  ``scripts/make_docstring_pairs.py`` (its output is committed). The chosen answer is the
  full, relevant explanation; the rejected one is truncated, off-topic or terse.
- ``hh-rlhf``: the 2,312 human preference pairs of Anthropic's hh-rlhf harmless-base test
  split, each a whole "Human: ... Assistant: ..." dialogue parsed into chat messages.

Every pair carries a fixed ``split`` (``train`` or ``test``, about 15% held out) that does not
depend on the training seed, so held-out figures are comparable across builds. The
AlpacaEval responses the model's length bias is checked on are read by
``rewardcal.datasets``, with these files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rewardcal import formatting
from rewardcal.datasets import read_jsonl_gz

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DOCSTRING_PAIRS = DATA_DIR / "docstring-pairs.jsonl.gz"
HH_RLHF_PAIRS = DATA_DIR / "hh-rlhf-harmless-base-test.jsonl.gz"

SOURCE_DOCSTRINGS = "docstrings"
SOURCE_HH_RLHF = "hh-rlhf"
HH_TEST_PERCENT = 15

Message = dict[str, str]

_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


@dataclass(frozen=True)
class Pair:
    """One preference: ``chosen`` beats ``rejected`` (both are whole conversations)."""

    source: str
    kind: str  # docstrings: truncated | off_topic | terse; hh-rlhf: human
    split: str  # train | test
    chosen: tuple[Message, ...]
    rejected: tuple[Message, ...]

    @property
    def chosen_response(self) -> str:
        return formatting.last_assistant_turn(self.chosen)

    @property
    def rejected_response(self) -> str:
        return formatting.last_assistant_turn(self.rejected)


def parse_hh_dialogue(text: str) -> list[Message]:
    """Split an hh-rlhf transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") into messages.

    Roles become ``user`` / ``assistant``; contents are stripped. Text before the first
    marker (there is none in the data) is kept as a user turn.
    """
    parts = _HH_TURN.split(text)
    messages: list[Message] = []
    if parts[0].strip():
        messages.append({"role": "user", "content": parts[0].strip()})
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": _HH_ROLES[role], "content": content.strip()})
    return messages


def _hh_split(messages: Sequence[Message]) -> str:
    """Held-out by a hash of the conversation's first turn (its topic), not by position."""
    first = messages[0]["content"] if messages else ""
    digest = hashlib.sha256(first.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:4], "big") % 100 < HH_TEST_PERCENT else "train"


def load_hh_rlhf_pairs(path: Path = HH_RLHF_PAIRS) -> list[Pair]:
    pairs: list[Pair] = []
    for row in read_jsonl_gz(path):
        chosen = parse_hh_dialogue(str(row["chosen"]))
        rejected = parse_hh_dialogue(str(row["rejected"]))
        if not chosen or not rejected or chosen == rejected:
            continue
        pairs.append(
            Pair(SOURCE_HH_RLHF, "human", _hh_split(chosen), tuple(chosen), tuple(rejected))
        )
    return pairs


def load_docstring_pairs(path: Path = DOCSTRING_PAIRS) -> list[Pair]:
    pairs: list[Pair] = []
    for row in read_jsonl_gz(path):
        prompt = str(row["prompt"])
        pairs.append(
            Pair(
                SOURCE_DOCSTRINGS,
                str(row["kind"]),
                str(row["split"]),
                tuple(formatting.pair_messages(prompt, str(row["chosen"]))),
                tuple(formatting.pair_messages(prompt, str(row["rejected"]))),
            )
        )
    return pairs


def load_all_pairs() -> list[Pair]:
    """Every pair of both sources, docstrings first, in file order."""
    return load_docstring_pairs() + load_hh_rlhf_pairs()


def select(pairs: Iterable[Pair], *, split: str, source: str | None = None) -> list[Pair]:
    return [p for p in pairs if p.split == split and (source is None or p.source == source)]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
