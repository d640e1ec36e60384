"""Tokenize stage: request inputs -> the token ids to score and the response features.

A pool of worker threads takes jobs from one FIFO queue. A worker takes every queued job up
to ``TOKENIZE_CHUNK_CHARS`` characters of work at once and tokenizes their texts in one
batched encode (the per-call overhead of a tokenizer is far larger than its per-text work on
short texts: 64 one-sample requests cost one call, not 64). A request's inputs go in jobs of
at most that much work, queued one after the other, so a huge request takes turns with small
ones and a request whose client left is dropped between its jobs.

Truncation never touches the shared tokenizer's state: texts are encoded untruncated (cut to
what truncation can keep first, see :func:`rewardcal.formatting.cut_text`) and the ids are
truncated after, keeping the special tokens; token-id inputs are truncated the same way.
Features are computed only when asked for (``tokens`` costs one more encode per response).
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rewardcal import formatting
from rewardcal.errors import ErrorType, ServiceError
from rewardcal.features import markdown_count
from rewardcal.formatting import SpecialTokens, char_bound
from rewardcal.templated import ResponseLocator

TOKENIZE_CHUNK_CHARS = 1 << 17
"""Characters of text one worker pass takes at most (beyond one input's own bound): about
tens of ms of a fast tokenizer, the longest a small request waits behind a huge one."""


@dataclass(frozen=True)
class ScoreInput:
    """One thing to score, in whichever form the protocol delivered it.

    Exactly one of ``messages``, ``text`` and ``token_ids`` is set. ``response`` is the part
    whose bias features are measured (None: derived from messages or the decoded ids).
    """

    messages: tuple[Mapping[str, str], ...] | None = None
    text: str | None = None
    token_ids: tuple[int, ...] | None = None
    response: str | None = None


@dataclass
class Prepared:
    token_ids: list[list[int]] = field(default_factory=list)
    features: list[dict[str, float]] = field(default_factory=list)
    located: list[bool | None] = field(default_factory=list)

    def extend(self, other: Prepared) -> None:
        self.token_ids.extend(other.token_ids)
        self.features.extend(other.features)
        self.located.extend(other.located)


@dataclass
class _Job:
    inputs: list[ScoreInput]
    first_index: int
    limit: int
    features: frozenset[str]
    work: int
    deliver: Callable[[Prepared | BaseException], None]
    cancelled: bool = False


@dataclass
class _Pending:
    """One input between the stages of a worker pass."""

    job: _Job
    index: int
    text: str | None = None  # to encode (None: token-id input)
    ids: list[int] | None = None
    length: int = 0
    response: str = ""
    response_at: int = -1  # where the response starts in ``text`` (-1: not known)
    encoding: Any = None  # the fast tokenizer's Encoding of the whole text (its char spans)
    response_tokens: int = 0
    located: bool | None = None
    error: ServiceError | None = None  # this input's own failure (its request fails alone)


class TokenizeStage:
    def __init__(self, tokenizer: Any, *, truncation: str, workers: int = 1) -> None:
        self._tokenizer = tokenizer
        self._truncation = truncation
        self._side: formatting.TruncationSide = "right" if truncation == "right" else "left"
        self._encoder = _Encoder(tokenizer)
        self._vocab_size = len(tokenizer)
        self._specials = formatting.special_tokens(tokenizer)
        self._locator = ResponseLocator(tokenizer)
        self._queue: collections.deque[_Job] = collections.deque()
        self._ready = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"rewardcal-tokenize-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    async def prepare(
        self, inputs: Sequence[ScoreInput], limit: int, features: frozenset[str]
    ) -> Prepared:
        loop = asyncio.get_running_loop()
        out = Prepared()
        for start, chunk, work in _chunks(list(inputs), char_bound(limit)):
            future: asyncio.Future[Prepared] = loop.create_future()

            def deliver(result: Prepared | BaseException, future: Any = future) -> None:
                loop.call_soon_threadsafe(_settle, future, result)

            job = _Job(chunk, start, limit, features, work, deliver)
            with self._ready:
                self._queue.append(job)
                self._ready.notify()
            try:
                out.extend(await future)
            except asyncio.CancelledError:
                job.cancelled = True
                raise
        return out

    # ---- worker threads -----------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return
                jobs = [self._queue.popleft()]
                work = jobs[0].work
                while self._queue and work + self._queue[0].work <= TOKENIZE_CHUNK_CHARS:
                    work += self._queue[0].work
                    jobs.append(self._queue.popleft())
            self._run([job for job in jobs if not job.cancelled])

    def _run(self, jobs: list[_Job]) -> None:
        pending: list[_Pending] = []
        failed: dict[int, BaseException] = {}
        for job in jobs:
            try:
                pending.extend(self._texts(job))
            except Exception as exc:  # noqa: BLE001 - the job's own failure, others go on
                failed[id(job)] = exc
        pending = [p for p in pending if id(p.job) not in failed]
        try:
            self._encode([p for p in pending if p.text is not None])
            self._count_tokens([p for p in pending if "tokens" in p.job.features])
        except Exception as exc:  # noqa: BLE001 - a tokenizer failure fails this pass only
            for job in jobs:
                failed.setdefault(id(job), exc)
        results = {id(job): Prepared() for job in jobs}
        for item in pending:
            if id(item.job) in failed:
                continue
            try:
                self._finish(item, results[id(item.job)])
            except Exception as exc:  # noqa: BLE001
                failed[id(item.job)] = exc
        for job in jobs:
            job.deliver(failed.get(id(job)) or results[id(job)])

    def _texts(self, job: _Job) -> Iterator[_Pending]:
        """Per input: the text to encode (or the ids given) and the response it measures."""
        tokenizer = self._tokenizer
        for offset, item in enumerate(job.inputs):
            pending = _Pending(job, job.first_index + offset)
            if item.token_ids is not None:
                pending.ids = self._take_ids(item.token_ids, job.limit, pending.index)
                pending.length = len(item.token_ids)
                response = item.response
                if response is None:
                    # The scored ids are what the model judges (never more than the limit
                    # is decoded). Special tokens kept: chat templates mark turns with them.
                    decoded = tokenizer.decode(pending.ids, skip_special_tokens=False)
                    found = self._locator.locate(decoded)
                    response, pending.located = found.response, found.located
                    if not found.located:
                        response = tokenizer.decode(pending.ids, skip_special_tokens=True)
            elif item.messages is not None:
                pending.text = _render(tokenizer, item.messages, pending.index)
                response = item.response
                if response is None:
                    response = formatting.last_assistant_turn(item.messages)
                pending.response_at = pending.text.rfind(response) if response else -1
            else:
                assert item.text is not None
                pending.text = item.text
                response = item.response
                if response is None:  # templated text: the template says where it is
                    found = self._locator.locate(item.text)
                    response, pending.located = found.response, found.located
                    pending.response_at = item.text.rfind(response) if response else -1
                else:  # cut from templated text: drop the end-of-turn that follows it
                    at = len(item.text) - len(response)
                    response = self._locator.strip_end(response)
                    if item.text.startswith(response, at):
                        pending.response_at = at
            pending.response = response
            yield pending

    def _encode(self, items: list[_Pending]) -> None:
        if not items:
            return
        side = self._side
        bos = getattr(self._tokenizer, "bos_token", None)
        parts: list[str] = []
        specials: list[bool] = []
        for item in items:
            assert item.text is not None
            add = formatting.needs_special_tokens(self._tokenizer, item.text)
            part = formatting.cut_text(item.text, char_bound(item.job.limit), side)
            if part is not item.text and side == "left" and not add:
                part = str(bos) + part  # the text carries its own BOS: keep it in front
            parts.append(part)
            specials.append(add)
        # Character offsets (costly: ~20% of an encode) only where the tokens feature reads
        # them, see _count_tokens.
        offsets = ["tokens" in item.job.features for item in items]
        encoded = self._encoder.encode(parts, specials, offsets)
        for item, part, (ids, encoding), add in zip(items, parts, encoded, specials, strict=True):
            assert item.text is not None
            if part is item.text:
                item.encoding = encoding
            if part is not item.text and len(ids) <= item.job.limit:
                # The cut held too few tokens (very long tokens): the careful path.
                try:
                    one = formatting.encode_one(self._tokenizer, item.text, item.job.limit, side)
                except ValueError as exc:
                    item.error = ServiceError(
                        ErrorType.INVALID_REQUEST, f"input {item.index}: {exc}"
                    )
                    continue
                item.ids, item.length = one.ids, one.length
                continue
            item.length = len(ids)
            kept = self._specials if add else self._own_bos()
            try:
                item.ids = formatting.truncate_ids(ids, item.job.limit, side, kept)
            except ValueError as exc:  # a limit below the special tokens
                item.error = ServiceError(ErrorType.INVALID_REQUEST, f"input {item.index}: {exc}")

    def _own_bos(self) -> SpecialTokens:
        bos_id = getattr(self._tokenizer, "bos_token_id", None)
        return SpecialTokens((int(bos_id),), ()) if bos_id is not None else SpecialTokens((), ())

    def _count_tokens(self, items: list[_Pending]) -> None:
        """The ``tokens`` feature: the response's tokens where the model saw them (in the
        encoded text, by offsets: no second encode), else by encoding the response."""
        rest = []
        for item in items:
            # The encoding is the whole text's (before truncation).
            if item.encoding is not None and item.response_at >= 0:
                item.response_tokens = _tokens_between(
                    item.encoding, item.response_at, item.response_at + len(item.response)
                )
            else:
                rest.append(item)
        if not rest:
            return
        heads = []
        for item in rest:
            bound = char_bound(item.job.limit)
            heads.append(
                item.response
                if len(item.response) <= bound
                else formatting.cut_text(item.response, bound, "right")
            )
        encoded = self._encoder.encode(heads, [False] * len(heads), [False] * len(heads))
        counts = [len(ids) for ids, _ in encoded]
        for item, head, count in zip(rest, heads, counts, strict=True):
            # Beyond the bound, estimated from the part counted (the tokens of a huge response).
            item.response_tokens = (
                count
                if head is item.response
                else round(count * len(item.response) / max(1, len(head)))
            )

    def _finish(self, item: _Pending, out: Prepared) -> None:
        if item.error is not None:
            raise item.error
        limit = item.job.limit
        if item.length > limit and self._truncation == "error":
            raise ServiceError(
                ErrorType.VALIDATION,
                f"input {item.index} has {item.length} tokens or more; the limit is {limit} "
                "(the server is configured to refuse rather than truncate)",
            )
        if not item.ids:
            raise ServiceError(ErrorType.VALIDATION, f"input {item.index} is empty")
        wanted = item.job.features
        features: dict[str, float] = {}
        if "chars" in wanted:
            features["chars"] = float(len(item.response))
        if "tokens" in wanted:
            features["tokens"] = float(item.response_tokens)
        if "markdown" in wanted:
            features["markdown"] = float(markdown_count(item.response))
        out.token_ids.append(item.ids)
        out.features.append(features)
        out.located.append(item.located)

    def _take_ids(self, ids: Sequence[int], limit: int, index: int) -> list[int]:
        # Checked here, before any batch: an id outside the vocabulary would fail the
        # forward pass of every request batched with it.
        vocab_size = self._vocab_size
        if ids and (min(ids) < 0 or max(ids) >= vocab_size):
            bad = next(t for t in ids if not 0 <= t < vocab_size)
            raise ServiceError(
                ErrorType.INVALID_REQUEST,
                f"input {index}: token id {bad} is outside the model's vocabulary "
                f"(0 to {vocab_size - 1})",
            )
        try:
            return formatting.truncate_ids(ids, limit, self._side, self._specials)
        except ValueError as exc:
            raise ServiceError(ErrorType.INVALID_REQUEST, f"input {index}: {exc}") from None


class _Encoder:
    """Batched encodes without truncation. Fast tokenizers are called through their Rust
    tokenizer (a private copy, so no setting of the shared one is ever read or changed);
    others through the tokenizer's own call."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._fast: Any = None
        if backend is not None:
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_str(backend.to_str())
            self._fast.no_truncation()
            self._fast.no_padding()

    def encode(
        self, texts: list[str], add_special: list[bool], offsets: list[bool]
    ) -> list[tuple[list[int], Any]]:
        """Per text its ids and, from a fast tokenizer where ``offsets`` asks for them, its
        ``Encoding`` with character offsets (else None)."""
        out: list[tuple[list[int], Any]] = [([], None)] * len(texts)
        for flag in (True, False):
            for with_offsets in (True, False):
                picked = [
                    i
                    for i, (add, want) in enumerate(zip(add_special, offsets, strict=True))
                    if add is flag and want is with_offsets
                ]
                if picked:
                    self._encode_some(texts, picked, flag, with_offsets, out)
        return out

    def _encode_some(
        self,
        texts: list[str],
        picked: list[int],
        add_special: bool,
        with_offsets: bool,
        out: list[tuple[list[int], Any]],
    ) -> None:
        batch = [texts[i] for i in picked]
        if self._fast is None:
            ids = self._tokenizer(
                batch, add_special_tokens=add_special, truncation=False, verbose=False
            )["input_ids"]
            for i, row in zip(picked, ids, strict=True):
                out[i] = (list(row), None)
        elif with_offsets:
            encodings = self._fast.encode_batch(batch, add_special_tokens=add_special)
            for i, e in zip(picked, encodings, strict=True):
                out[i] = (e.ids, e)
        else:  # the same ids without computing offsets
            encodings = self._fast.encode_batch_fast(batch, add_special_tokens=add_special)
            for i, e in zip(picked, encodings, strict=True):
                out[i] = (e.ids, None)


def _tokens_between(encoding: Any, start: int, end: int) -> int:
    """Tokens of ``encoding`` covering characters [start, end) (a few lookups, no list)."""
    first = last = None
    for pos in range(start, end):
        first = encoding.char_to_token(pos)
        if first is not None:
            break
    if first is None:
        return 0
    for pos in range(end - 1, start - 1, -1):
        last = encoding.char_to_token(pos)
        if last is not None:
            break
    assert last is not None
    return int(last) - int(first) + 1


def _settle(future: asyncio.Future[Prepared], result: Prepared | BaseException) -> None:
    if future.done():  # its request went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _chunks(
    inputs: list[ScoreInput], item_chars: int
) -> Iterator[tuple[int, list[ScoreInput], int]]:
    """(first index, inputs, work) runs of about TOKENIZE_CHUNK_CHARS characters each."""
    start = 0
    budget = 0
    for index, item in enumerate(inputs):
        budget += min(_work(item), item_chars)
        if budget >= TOKENIZE_CHUNK_CHARS:
            yield start, inputs[start : index + 1], budget
            start, budget = index + 1, 0
    if start < len(inputs):
        yield start, inputs[start:], budget


def _work(item: ScoreInput) -> int:
    if item.token_ids is not None:
        return 4 * min(len(item.token_ids), 4096)  # decoding the kept ids
    if item.text is not None:
        return len(item.text)
    assert item.messages is not None
    return sum(len(str(m.get("content", ""))) for m in item.messages)


def _render(tokenizer: Any, messages: Sequence[Mapping[str, str]], index: int) -> str:
    try:
        return formatting.render_messages(tokenizer, messages)
    except Exception as exc:  # noqa: BLE001 - templates raise anything (jinja, TypeError)
        # Chat templates refuse some conversations (e.g. roles that do not alternate):
        # that is the client's input, not a server fault.
        raise ServiceError(
            ErrorType.VALIDATION,
            f"input {index}: the model's chat template refused these messages: {str(exc)[:200]}",
        ) from None
