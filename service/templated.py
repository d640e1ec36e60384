"""Find the response inside text already rendered with the reward model's chat template.

Trainers often send templated text instead of messages (vLLM ``/classify`` ``input``,
OpenRLHF's ``query``, verl's built-in reward client). The bias feature must measure the
response only, as the ``messages`` path does; measuring the whole text would fit the curve
on prompt + response length, which is not what the paper calibrates.

The template itself says where a response sits: render ``[user: U, assistant: A]`` with
sentinel strings U and A and read off the text the template puts between the end of the
user's content and the start of the assistant's (the *assistant prefix*: the user's
end-of-turn plus the assistant header) and after the assistant's content (the *suffix*).
In a templated text, the response starts after the last assistant prefix and ends before
the suffix (or the part of it, or the EOS token, that the text ends with: a text built
from a generation prompt + completion + EOS ends differently from a rendered one).

When the template cannot locate a response (no template, sentinels transformed by the
template, no assistant prefix in the text) the caller falls back to the whole text and
says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

_USER_SENTINEL = "RCUSERSENTINEL7f3a"
_ASSISTANT_SENTINEL = "RCASSISTANTSENTINEL9b1c"


@dataclass(frozen=True)
class Located:
    """The response part of a templated text; ``located`` is False for the fallback."""

    response: str
    located: bool


@dataclass(frozen=True)
class TemplateAffixes:
    """What a chat template writes around the content of the last assistant turn."""

    # The rendered prefix of a final assistant turn and, when it differs, the generation
    # prompt's (Qwen3 renders an empty thinking block into the former only).
    assistant_prefixes: tuple[str, ...]
    suffix: str
    eos: str | None

    def locate(self, text: str) -> Located:
        # The prefix that ends last: the last assistant turn, and at the same place the
        # longer (rendered) prefix.
        best_end = -1
        for prefix in self.assistant_prefixes:
            at = text.rfind(prefix)
            if at >= 0:
                best_end = max(best_end, at + len(prefix))
        if best_end < 0:
            return Located(text, located=False)
        return Located(self._strip_end(text[best_end:]), located=True)

    def strip_end(self, body: str) -> str:
        """``body`` without the end-of-turn the template (or generation) put after it."""
        return self._strip_end(body)

    def _strip_end(self, body: str) -> str:
        # Longest ending first: the full rendered suffix, the suffix without its trailing
        # whitespace, then the EOS token a generation loop appends.
        endings = [self.suffix, self.suffix.rstrip()]
        if self.eos:
            endings.append(self.eos)
        for ending in endings:
            if ending and body.endswith(ending):
                return body[: -len(ending)]
        return body


def template_affixes(tokenizer: Any) -> TemplateAffixes | None:
    """The assistant prefix and suffix of the tokenizer's chat template, or None when the
    tokenizer has no template or the template does not keep the sentinels intact."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    conversation = [
        {"role": "user", "content": _USER_SENTINEL},
        {"role": "assistant", "content": _ASSISTANT_SENTINEL},
    ]
    try:
        rendered = str(
            tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)
        )
    except Exception as exc:  # noqa: BLE001 - templates raise anything (jinja, TypeError)
        logger.warning("chat template cannot render a user/assistant pair: %s", exc)
        return None
    user_at = rendered.find(_USER_SENTINEL)
    assistant_at = rendered.find(_ASSISTANT_SENTINEL)
    if user_at < 0 or assistant_at < user_at:
        logger.warning("chat template does not keep message contents intact: %r", rendered)
        return None
    prefix = rendered[user_at + len(_USER_SENTINEL) : assistant_at]
    if not prefix.strip():
        # Nothing marks where the assistant's turn starts (e.g. turns joined by a bare
        # newline): a response cannot be told from the prompt.
        return None
    suffix = rendered[assistant_at + len(_ASSISTANT_SENTINEL) :]
    prefixes = [prefix]
    generation = _generation_prefix(tokenizer, conversation[:1])
    if generation and generation != prefix and generation.strip():
        prefixes.append(generation)
    eos = getattr(tokenizer, "eos_token", None)
    return TemplateAffixes(
        assistant_prefixes=tuple(prefixes), suffix=suffix, eos=str(eos) if eos else None
    )


def _generation_prefix(tokenizer: Any, prompt: list[dict[str, str]]) -> str | None:
    """What the template writes after the user's content when asked for a generation
    prompt (what a trainer's prompt ends with before the completion); None when the template
    has no generation prompt (the user's turn ends the same way with and without)."""
    tails = []
    for add in (False, True):
        try:
            rendered = str(
                tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=add)
            )
        except Exception:  # noqa: BLE001 - the rendered form alone still works
            return None
        at = rendered.find(_USER_SENTINEL)
        if at < 0:
            return None
        tails.append(rendered[at + len(_USER_SENTINEL) :])
    without, with_prompt = tails
    if len(with_prompt) <= len(without) or not with_prompt.startswith(without):
        return None
    return with_prompt


class ResponseLocator:
    """Locates responses in templated text for one tokenizer (affixes computed once)."""

    def __init__(self, tokenizer: Any) -> None:
        self.affixes = template_affixes(tokenizer)

    def locate(self, text: str) -> Located:
        if self.affixes is None:
            return Located(text, located=False)
        return self.affixes.locate(text)

    def strip_end(self, response: str) -> str:
        """A response cut from templated text (``query[len(prompt):]``) without the
        end-of-turn or EOS that follows it there, as the messages path measures it."""
        return response if self.affixes is None else self.affixes.strip_end(response)
