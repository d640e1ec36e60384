"""Reward functions for trainers: TRL (GRPOTrainer & co.) and verl. OpenRLHF needs no code:
point ``--reward.remote_url`` (``--remote_rm_url`` before 0.10.2) at ``/get_reward``.

TRL — ``GRPOTrainer(reward_funcs=...)`` calls ``reward_func(prompts=..., completions=...,
**dataset_columns)`` and logs each function under its ``__name__``::

    from rewardcal_client import make_trl_reward_func
    reward_fn = make_trl_reward_func("http://rm-host:8000", calibration_group="grpo-run-7")
    trainer = GRPOTrainer(model=..., reward_funcs=[reward_fn], train_dataset=...)

verl — ``reward.custom_reward_function.path`` names a file (or ``pkg://module``), ``.name``
a function in it, called per sample by verl's naive reward manager as
``compute_score(data_source=, solution_str=, ground_truth=, extra_info=, **reward_kwargs)``::

    # rewardcal_reward.py
    from rewardcal_client import make_verl_compute_score
    compute_score = make_verl_compute_score("http://rm-host:8000", calibration_group="ppo-7")

verl >= 0.7 executes a file it loads by path without registering it in ``sys.modules``;
this module is imported normally (``rewardcal_client.integrations`` is the thin file to point
verl at), so its classes pickle by reference and nothing here depends on how verl loads it.

Everything here pickles (verl and TRL may ship reward functions to other processes): the
callables hold settings only, and each process opens its own pooled client on first use.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rewardcal_client._base import TimeoutTypes
from rewardcal_client._http import DEFAULT_TIMEOUT, RetryPolicy
from rewardcal_client._protocol import messages_of
from rewardcal_client.sync import RewardClient
from rewardcal_client.types import RewardResult

URL_ENV = "REWARDCAL_URL"

# -- one pooled client per (process, settings) ------------------------------------------------

_POOL: dict[tuple[Any, ...], RewardClient] = {}
_POOL_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Endpoint:
    url: str
    api_key: str | None = field(repr=False)
    timeout: float | None
    retry: RetryPolicy | None

    def key(self) -> tuple[Any, ...]:
        # The pid: a client inherited through fork() shares its sockets with the parent.
        return (os.getpid(), self.url, self.api_key, self.timeout, self.retry)


def _resolve_url(url: str | None) -> str:
    resolved = url or os.environ.get(URL_ENV)
    if not resolved:
        raise ValueError(f"give the rewardcal server URL (or set {URL_ENV})")
    return resolved


def _timeout_s(timeout: TimeoutTypes) -> float | None:
    if timeout is None or isinstance(timeout, int | float):
        return timeout
    return timeout.read


def pooled_client(
    url: str | None = None,
    *,
    api_key: str | None = None,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
) -> RewardClient:
    """The process-wide client for these settings, created on first use and reused after."""
    endpoint = _Endpoint(_resolve_url(url), api_key, timeout, retry)
    key = endpoint.key()
    with _POOL_LOCK:
        client = _POOL.get(key)
        if client is None or client.closed:
            client = RewardClient(
                endpoint.url,
                api_key=api_key,
                timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
                retry=retry,
            )
            _POOL[key] = client
        return client


@atexit.register
def close_pooled_clients() -> None:
    """Close every pooled client of this process (runs at exit)."""
    with _POOL_LOCK:
        clients = list(_POOL.values())
        _POOL.clear()
    for client in clients:
        client.close()


# -- TRL ---------------------------------------------------------------------------------------


def _is_conversation(value: Any) -> bool:
    return not isinstance(value, str | bytes | Mapping) and isinstance(value, Iterable)


class TRLRewardFunc:
    """A TRL reward function backed by rewardcal; build it with :func:`make_trl_reward_func`.

    Called as ``reward_func(prompts, completions, **kwargs) -> list[float]``:

    - conversational format (``completions[i] == [{"role": "assistant", "content": ...}]``,
      ``prompts[i]`` a list of messages): prompt + completion messages are scored with
      ``/v1/rewards`` (the server applies the reward model's chat template and measures
      the last assistant turn);
    - standard format (strings): like TRL's own reward-model path, ``prompt + completion``
      is scored as text (``/get_reward``, the completion is the measured response). With
      ``templated=False`` the strings are sent as a (prompt, response) pair instead and
      the server applies the chat template.

    Extra keyword arguments (dataset columns, ``trainer_state``, ...) are ignored, except
    TRL's logging hooks: ``log_extra`` (per-completion columns of the completions table)
    gets the raw rewards as the ``<name>_raw`` column, and ``log_metric`` (scalars averaged
    per logging step into ``trainer.state.log_history``, TRL >= 1.0) gets
    ``rewards/<name>_raw/mean`` (what the reward model said before calibration; TRL's own
    ``rewards/<name>/mean`` is what the policy was trained on) and
    ``calibration/<name>/version`` (the newest curve version in the batch, 0 while
    warming up): comparing a raw and a calibrated run needs both per step.
    """

    def __init__(
        self,
        endpoint: _Endpoint,
        *,
        name: str,
        calibration_group: str | None,
        observe: bool,
        use_calibrated: bool,
        templated: bool,
        batch_size: int,
        client: RewardClient | None = None,
    ) -> None:
        self._endpoint = endpoint
        self.__name__ = name
        self.__qualname__ = name
        self.calibration_group = calibration_group
        self.observe = observe
        self.use_calibrated = use_calibrated
        self.templated = templated
        self.batch_size = batch_size
        self._client = client

    @property
    def client(self) -> RewardClient:
        if self._client is not None:
            return self._client
        e = self._endpoint
        return pooled_client(e.url, api_key=e.api_key, timeout=e.timeout, retry=e.retry)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None  # a client does not travel: the receiver pools its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<rewardcal TRL reward function {self.__name__!r} -> {self._endpoint.url}>"

    def results(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[RewardResult]:
        """The full results (raw, calibrated, bias, version) in input order."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        native: list[tuple[int, Any]] = []
        texts: list[tuple[int, str, str]] = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            if _is_conversation(completion) or _is_conversation(prompt):
                head = (
                    messages_of(prompt)
                    if _is_conversation(prompt)
                    else [{"role": "user", "content": str(prompt)}]
                )
                tail = (
                    messages_of(completion)
                    if _is_conversation(completion)
                    else [{"role": "assistant", "content": str(completion)}]
                )
                native.append((i, {"messages": head + tail}))
            elif self.templated:
                texts.append((i, str(prompt) + str(completion), str(prompt)))
            else:
                native.append((i, (str(prompt), str(completion))))
        options: dict[str, Any] = {
            "calibration_group": self.calibration_group,
            "observe": self.observe,
            "batch_size": self.batch_size,
        }
        out: list[RewardResult | None] = [None] * len(prompts)
        if native:
            scored = self.client.score([item for _, item in native], **options)
            for (i, _), result in zip(native, scored, strict=True):
                out[i] = result
        if texts:
            scored = self.client.score_texts(
                [t for _, t, _ in texts], [p for _, _, p in texts], **options
            )
            for (i, _, _), result in zip(texts, scored, strict=True):
                out[i] = result
        return [r for r in out if r is not None]

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float]:
        results = self.results(prompts, completions)
        log_extra = kwargs.get("log_extra")
        if callable(log_extra):
            log_extra(f"{self.__name__}_raw", [r.raw_reward for r in results])
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and results:
            log_metric(
                f"rewards/{self.__name__}_raw/mean",
                sum(r.raw_reward for r in results) / len(results),
            )
            log_metric(
                f"calibration/{self.__name__}/version",
                float(max(r.version or 0 for r in results)),
            )
        return [r.reward if self.use_calibrated else r.raw_reward for r in results]


def make_trl_reward_func(
    url: str | None = None,
    *,
    api_key: str | None = None,
    calibration_group: str | None = None,
    observe: bool = True,
    use_calibrated: bool = True,
    templated: bool = True,
    batch_size: int = 64,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    name: str = "rewardcal",
    client: RewardClient | None = None,
) -> TRLRewardFunc:
    """A reward function for TRL's ``GRPOTrainer`` (``reward_funcs=[...]``) and other TRL
    trainers that take ``reward_func(prompts, completions, **kwargs) -> list[float]``.

    ``url`` is the server's base URL (default: ``$REWARDCAL_URL``); ``use_calibrated=False``
    returns raw rewards (still observed, so the curve keeps learning); ``name`` is what TRL
    logs the reward under (``rewards/<name>/mean``). ``client`` reuses an existing
    :class:`RewardClient` instead of the process-wide pooled one.

    Example::

        reward_fn = make_trl_reward_func("http://rm-host:8000", calibration_group="grpo-7")
        reward_fn(["What is 2+2?"], ["4."])                                  # standard
        reward_fn([[{"role": "user", "content": "What is 2+2?"}]],
                  [[{"role": "assistant", "content": "4."}]])                # conversational
    """
    if client is not None:  # what a pickled copy needs to open its own pooled client
        endpoint = _Endpoint(client.base_url, api_key or client._api_key, timeout, retry)
    else:
        endpoint = _Endpoint(_resolve_url(url), api_key, timeout, retry)
    return TRLRewardFunc(
        endpoint,
        name=name,
        calibration_group=calibration_group,
        observe=observe,
        use_calibrated=use_calibrated,
        templated=templated,
        batch_size=batch_size,
        client=client,
    )


# -- verl --------------------------------------------------------------------------------------

DEFAULT_PROMPT_KEYS = ("prompt", "question")


def _verl_item(solution_str: str, extra_info: Any, prompt_keys: Sequence[str]) -> Any:
    prompt: Any = None
    if isinstance(extra_info, Mapping):
        for key in prompt_keys:
            if extra_info.get(key) is not None:
                prompt = extra_info[key]
                break
    response = str(solution_str)
    if prompt is not None and _is_conversation(prompt):
        messages = messages_of(prompt)
        return {"messages": [*messages, {"role": "assistant", "content": response}]}
    return (str(prompt) if prompt is not None else "", response)


@dataclass(frozen=True)
class _VerlSettings:
    endpoint: _Endpoint
    calibration_group: str | None
    observe: bool
    use_calibrated: bool
    prompt_keys: tuple[str, ...]

    def score(self, items: list[Any]) -> list[float]:
        e = self.endpoint
        client = pooled_client(e.url, api_key=e.api_key, timeout=e.timeout, retry=e.retry)
        results = client.score(
            items, calibration_group=self.calibration_group, observe=self.observe
        )
        return [float(r.reward if self.use_calibrated else r.raw_reward) for r in results]


class VerlComputeScore:
    """verl's ``compute_score(data_source, solution_str, ground_truth, extra_info=None,
    **kwargs) -> float`` for one sample; build it with :func:`make_verl_compute_score`."""

    def __init__(self, settings: _VerlSettings) -> None:
        self.settings = settings
        self.__name__ = "compute_score"

    def __call__(
        self,
        data_source: Any = None,
        solution_str: str = "",
        ground_truth: Any = None,
        extra_info: Any = None,
        **kwargs: Any,
    ) -> float:
        item = _verl_item(solution_str, extra_info, self.settings.prompt_keys)
        return self.settings.score([item])[0]


def _verl_settings(
    url: str | None,
    api_key: str | None,
    calibration_group: str | None,
    observe: bool,
    use_calibrated: bool,
    prompt_keys: Sequence[str],
    timeout: float | None,
    retry: RetryPolicy | None,
) -> _VerlSettings:
    return _VerlSettings(
        _Endpoint(_resolve_url(url), api_key, timeout, retry),
        calibration_group,
        observe,
        use_calibrated,
        tuple(prompt_keys),
    )


def make_verl_compute_score(
    url: str | None = None,
    *,
    api_key: str | None = None,
    calibration_group: str | None = None,
    observe: bool = True,
    use_calibrated: bool = True,
    prompt_keys: Sequence[str] = DEFAULT_PROMPT_KEYS,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
) -> VerlComputeScore:
    """A verl custom reward function: ``compute_score(data_source, solution_str,
    ground_truth, extra_info=None, **kwargs) -> float`` (the reward of one sample).

    verl passes only the response (``solution_str``); the prompt is taken from
    ``extra_info[key]`` for the first of ``prompt_keys`` present (a string, or a list of
    chat messages), else it is empty. Calls share one pooled client per process.

    In a file named by ``custom_reward_function.path``::

        from rewardcal_client import make_verl_compute_score
        compute_score = make_verl_compute_score("http://rm-host:8000", calibration_group="ppo-7")
    """
    return VerlComputeScore(
        _verl_settings(
            url, api_key, calibration_group, observe, use_calibrated, prompt_keys, timeout, retry
        )
    )


def compute_score(
    data_source: Any = None,
    solution_str: str = "",
    ground_truth: Any = None,
    extra_info: Any = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    calibration_group: str | None = None,
    observe: bool = True,
    use_calibrated: bool = True,
    **kwargs: Any,
) -> float:
    """verl ``compute_score`` configured entirely from ``reward_kwargs`` (or
    ``$REWARDCAL_URL`` / ``$REWARDCAL_API_KEY``), for pointing verl's
    ``reward.custom_reward_function.path`` at ``pkg://rewardcal_client.integrations`` (or at
    that module's file)::

        reward.custom_reward_function.path=pkg://rewardcal_client.integrations
        reward.custom_reward_function.name=compute_score
        +reward.custom_reward_function.reward_kwargs.url=http://rm-host:8000
        +reward.custom_reward_function.reward_kwargs.calibration_group=ppo-7
    """
    settings = _verl_settings(
        url, api_key, calibration_group, observe, use_calibrated, DEFAULT_PROMPT_KEYS, None, None
    )
    return VerlComputeScore(settings)(data_source, solution_str, ground_truth, extra_info)
