"""Turn request inputs into the exact token ids a reward model scores.

Every backend (transformers, vLLM in-process, remote vLLM) receives token ids produced
here, so that all of them score the same tokens and the scheduler's token budget counts
real tokens. The default reward model is trained through these same functions.

Rules (documented in the API docs):
- ``messages`` are rendered with the tokenizer's chat template. A tokenizer without a
  template gets a plain ``role: content`` rendering, one turn per line.
- Assistant ``tool_calls`` (OpenAI shape) go to the template, which renders them when it
  supports tools; when the rendering does not show a call (a template that ignores them),
  each call is appended to the turn's content as
  ``\n<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`` (the Hermes/Qwen form).
  The measured response of a tool-call turn is its content plus those lines.
- ``prompt`` + ``response`` become ``[user: prompt, assistant: response]`` messages.
- Already-templated text (OpenRLHF ``query``, vLLM ``input``) is used as is.
- Special tokens (BOS/CLS/SEP) are added by the tokenizer unless the rendered text already
  starts with the BOS token, as chat templates of decoder models usually do; adding them
  twice would shift every score.
"""

from __future__ import annotations

import contextlib
import json
import re
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

TruncationSide = Literal["left", "right"]

_PLAIN_TEMPLATE_SEPARATOR = "\n"


def _content(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    return "" if content is None else str(content)


def _call_parts(call: Mapping[str, Any]) -> tuple[str, Any]:
    function = call.get("function", call)
    if not isinstance(function, Mapping):
        return "", {}
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):  # OpenAI sends the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass
    return str(function.get("name", "")), arguments


def serialized_tool_calls(message: Mapping[str, Any]) -> str:
    """The documented text form of a message's tool calls ('' when it has none)."""
    out = []
    for call in message.get("tool_calls") or ():
        if isinstance(call, Mapping):
            name, arguments = _call_parts(call)
            body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
            out.append(f"\n<tool_call>\n{body}\n</tool_call>")
    return "".join(out)


def _template_message(message: Mapping[str, Any]) -> dict[str, Any]:
    # Only the keys a template may test for: Llama 3.1 checks `'tool_calls' in message`,
    # so an absent field must stay absent rather than None.
    out: dict[str, Any] = {"role": str(message["role"]), "content": _content(message)}
    calls = message.get("tool_calls")
    if calls:
        out["tool_calls"] = [_with_parsed_arguments(c) for c in calls]
    if message.get("tool_call_id"):
        out["tool_call_id"] = str(message["tool_call_id"])
    return out


def _with_parsed_arguments(call: Any) -> Any:
    # Templates render `arguments` with tojson: give them the object, not the JSON string.
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        return call
    name, arguments = _call_parts(call)
    return {**call, "function": {**call["function"], "name": name, "arguments": arguments}}


def _shows_calls(text: str, messages: Sequence[Mapping[str, Any]]) -> bool:
    names = [_call_parts(c)[0] for m in messages for c in m.get("tool_calls") or () if c]
    return all(name in text for name in names)


def _plain(messages: Sequence[Mapping[str, Any]]) -> str:
    return _PLAIN_TEMPLATE_SEPARATOR.join(f"{m['role']}: {m['content']}" for m in messages)


def render_messages(tokenizer: Any, messages: Sequence[Mapping[str, Any]]) -> str:
    """Render a conversation into the text the reward model was trained on."""
    plain = [_template_message(m) for m in messages]
    has_calls = any("tool_calls" in m for m in plain)
    if getattr(tokenizer, "chat_template", None):
        text = str(
            tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=False)
        )
        if not has_calls or _shows_calls(text, plain):
            return text
    if has_calls:  # serialise the calls into the content, where any template shows them
        plain = [
            {"role": m["role"], "content": m["content"] + serialized_tool_calls(m)} for m in plain
        ]
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=False)
            return str(text)
    return _plain(plain)


def pair_messages(prompt: str, response: str) -> list[dict[str, str]]:
    """The conversation for a (prompt, response) pair."""
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def last_assistant_turn(messages: Sequence[Mapping[str, Any]]) -> str:
    """The response part of a conversation: its last assistant turn ('' if none), its tool
    calls included in their documented text form."""
    for message in reversed(messages):
        if message.get("role") == "assistant":
            return _content(message) + serialized_tool_calls(message)
    return ""


def needs_special_tokens(tokenizer: Any, text: str) -> bool:
    """Whether the tokenizer should add its special tokens to ``text``."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


CHARS_PER_TOKEN_BOUND = 64
"""Characters kept per allowed token before tokenizing an over-long text.

Tokenizing a 15 MB text to keep its last 512 tokens costs seconds of the shared tokenizer;
a token of a real tokenizer spans far fewer than 64 characters, so the first
``64 x max_tokens`` characters (or last, when truncating on the left) hold every token that
survives truncation. When a cut text still yields too few tokens (pathological inputs of
very long tokens), the cut doubles until it does or the whole text is used."""


@dataclass(frozen=True)
class SpecialTokens:
    """The ids a tokenizer adds around a text (BERT: [CLS] ... [SEP]; Llama: <s> ...)."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.prefix) + len(self.suffix)


_SPECIALS: weakref.WeakKeyDictionary[Any, SpecialTokens] = weakref.WeakKeyDictionary()


def special_tokens(tokenizer: Any) -> SpecialTokens:
    """Find the prefix and suffix ids by encoding a probe with and without them (cached)."""
    try:
        return _SPECIALS[tokenizer]
    except (KeyError, TypeError):
        pass
    probe = "a"
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    found = SpecialTokens((), ())
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            found = SpecialTokens(tuple(full[:start]), tuple(full[start + len(plain) :]))
            break
    with contextlib.suppress(TypeError):
        _SPECIALS[tokenizer] = found
    return found


def truncate_ids(
    ids: Sequence[int], max_tokens: int, side: TruncationSide, specials: SpecialTokens
) -> list[int]:
    """Keep ``max_tokens`` ids: the special prefix/suffix the input carries stay, the body
    is cut on ``side`` (left keeps its end). Pure: no tokenizer state is touched."""
    ids = list(ids)
    if len(ids) <= max_tokens:
        return ids
    head = len(specials.prefix) if tuple(ids[: len(specials.prefix)]) == specials.prefix else 0
    tail = (
        len(specials.suffix)
        if specials.suffix and tuple(ids[len(ids) - len(specials.suffix) :]) == specials.suffix
        else 0
    )
    keep = max_tokens - head - tail
    if keep <= 0:
        raise ValueError(
            f"a limit of {max_tokens} tokens leaves no room beside the model's "
            f"{head + tail} special tokens"
        )
    body = ids[head : len(ids) - tail]
    kept = body[len(body) - keep :] if side == "left" else body[:keep]
    return ids[:head] + kept + ids[len(ids) - tail :]


def char_bound(max_tokens: int) -> int:
    return max_tokens * CHARS_PER_TOKEN_BOUND


def cut_text(text: str, max_chars: int, side: TruncationSide) -> str:
    """The part of ``text`` that can hold the tokens surviving truncation on ``side``.

    Cuts at a whitespace boundary when there is one in the first/last 256 characters of the
    kept part, so that the word at the cut is not split into other tokens than the whole
    text would give."""
    if len(text) <= max_chars:
        return text
    if side == "left":
        start = len(text) - max_chars
        match = _WHITESPACE.search(text, start, min(start + 256, len(text)))
        return text[match.start() :] if match else text[start:]
    end = max_chars
    match = _WHITESPACE_BEFORE.search(text[max(0, end - 256) : end])
    return text[: max(0, end - 256) + match.start() + 1] if match else text[:end]


_WHITESPACE = re.compile(r"\s")
_WHITESPACE_BEFORE = re.compile(r"\s(?=\S*$)")


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    """Token ids to score (truncated to the limit, special tokens kept)."""
    over_limit: bool
    """Whether the whole text has more tokens than the limit (it was truncated)."""
    length: int
    """Tokens of the text before truncation; a lower bound when the text was cut first."""


def encode_one(
    tokenizer: Any, text: str, max_tokens: int, truncation_side: TruncationSide = "left"
) -> Encoded:
    """Tokenize one text for scoring, never reading more of it than truncation can keep."""
    add_special = needs_special_tokens(tokenizer, text)
    specials = special_tokens(tokenizer) if add_special else SpecialTokens((), ())
    max_chars = char_bound(max_tokens)
    while True:
        part = cut_text(text, max_chars, truncation_side)
        if part is not text and truncation_side == "left" and not add_special:
            # The text carries its own BOS (chat templates): keep it in front of the cut.
            bos = str(tokenizer.bos_token)
            part = bos + part
        # verbose=False: the "longer than the maximum" warning is expected here.
        ids = tokenizer(part, add_special_tokens=add_special, truncation=False, verbose=False)[
            "input_ids"
        ]
        if part is text or len(ids) > max_tokens or max_chars >= len(text):
            break
        max_chars *= 2  # the cut held too few tokens: very long tokens; look further
    if not add_special and getattr(tokenizer, "bos_token_id", None) is not None:
        specials = SpecialTokens((int(tokenizer.bos_token_id),), ())
    return Encoded(
        ids=truncate_ids(ids, max_tokens, truncation_side, specials),
        over_limit=len(ids) > max_tokens,
        length=len(ids),
    )


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    max_tokens: int,
    truncation_side: TruncationSide = "left",
) -> tuple[list[list[int]], list[int]]:
    """Tokenize texts for scoring: (token ids, per text its token count before truncation).

    Truncation keeps the special tokens; ``left`` drops the start of the prompt, which
    keeps the response a reward model judges. See :func:`encode_one`.
    """
    out = [encode_one(tokenizer, text, max_tokens, truncation_side) for text in texts]
    return [e.ids for e in out], [e.length for e in out]


def count_tokens(tokenizer: Any, text: str, max_chars: int) -> int:
    """Tokens of ``text`` without special tokens; beyond ``max_chars`` characters, estimated
    from the first ``max_chars`` (the ``tokens`` feature of a huge response)."""
    if len(text) <= max_chars:
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    head = cut_text(text, max_chars, "right")
    counted = len(tokenizer(head, add_special_tokens=False, verbose=False)["input_ids"])
    return round(counted * len(text) / max(1, len(head)))
