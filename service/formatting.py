"""Turn request inputs into the exact token ids a reward model scores.

Every backend (transformers, vLLM in-process, remote vLLM) receives token ids produced
here, so that all of them score the same tokens and the scheduler's token budget counts
real tokens. The default reward model is trained through these same functions.

Rules (documented in the API docs):
- ``messages`` are rendered with the tokenizer's chat template. A tokenizer without a
  template gets a plain ``role: content`` rendering, one turn per line.
- ``prompt`` + ``response`` become ``[user: prompt, assistant: response]`` messages.
- Already-templated text (OpenRLHF ``query``, vLLM ``input``) is used as is.
- Special tokens (BOS/CLS/SEP) are added by the tokenizer unless the rendered text already
  starts with the BOS token, as chat templates of decoder models usually do; adding them
  twice would shift every score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

TruncationSide = Literal["left", "right"]

_PLAIN_TEMPLATE_SEPARATOR = "\n"


def render_messages(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    """Render a conversation into the text the reward model was trained on."""
    plain = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=False)
        return str(text)
    return _PLAIN_TEMPLATE_SEPARATOR.join(f"{m['role']}: {m['content']}" for m in plain)


def pair_messages(prompt: str, response: str) -> list[dict[str, str]]:
    """The conversation for a (prompt, response) pair."""
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def last_assistant_turn(messages: Sequence[Mapping[str, str]]) -> str:
    """The response part of a conversation: its last assistant turn ('' if none)."""
    for message in reversed(messages):
        if message.get("role") == "assistant":
            return str(message.get("content", ""))
    return ""


def needs_special_tokens(tokenizer: Any, text: str) -> bool:
    """Whether the tokenizer should add its special tokens to ``text``."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    max_tokens: int,
    truncation_side: TruncationSide = "left",
) -> tuple[list[list[int]], list[int]]:
    """Tokenize texts for scoring.

    Returns the (possibly truncated) token ids and, per text, the untruncated length, so
    that callers can refuse over-long inputs instead of truncating when configured to.
    Truncation keeps the special tokens; ``left`` drops the start of the prompt, which
    keeps the response a reward model judges.
    """
    ids: list[list[int]] = []
    full_lengths: list[int] = []
    for text in texts:
        add_special = needs_special_tokens(tokenizer, text)
        # verbose=False: the "longer than the maximum" warning is expected here; the
        # length is measured on purpose and truncated below.
        full = tokenizer(text, add_special_tokens=add_special, truncation=False, verbose=False)[
            "input_ids"
        ]
        full_lengths.append(len(full))
        if len(full) <= max_tokens:
            ids.append(list(full))
            continue
        ids.append(_truncate(tokenizer, text, add_special, max_tokens, truncation_side))
    return ids, full_lengths


def _truncate(
    tokenizer: Any, text: str, add_special: bool, max_tokens: int, side: TruncationSide
) -> list[int]:
    previous = tokenizer.truncation_side
    tokenizer.truncation_side = side
    try:
        out = tokenizer(
            text, add_special_tokens=add_special, truncation=True, max_length=max_tokens
        )["input_ids"]
    finally:
        tokenizer.truncation_side = previous
    return list(out)
