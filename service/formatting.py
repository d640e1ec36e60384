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

import json
from collections.abc import Mapping, Sequence
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
