"""vllm backend: an in-process vLLM engine (``AsyncLLM``) with the pooling runner.

Each input is sent as its own ``encode`` request with ``PoolingParams(task="classify",
use_activation=False)``, so the raw first logit comes back (vLLM applies a sigmoid to
one-label models otherwise). vLLM batches concurrent requests itself (continuous batching
under its own token budget), so the scheduler forwards inputs at once
(``batches_itself=True``) and only its admission control applies.

Inputs are token ids from ``rewardcal.formatting`` sent as ``{"prompt_token_ids": ids}``: vLLM
never tokenizes or applies a chat template here, so this backend scores exactly the tokens
the transformers backend scores. The tokenizer (and its chat template) is loaded with
transformers from the model directory, as the transformers backend does. For decoder reward
models (last-token pooling) vLLM keeps prefix caching on: responses that share a prompt
(GRPO groups, best-of-n) compute the prompt once.

vLLM is imported only when this backend starts (``import vllm`` alone takes 10-30 s), so the
service runs without vLLM installed. The engine runs in child processes started with the
``spawn`` method: vLLM forces it on CPU (where the tests run), and this backend asks for it
everywhere else too (``VLLM_WORKER_MULTIPROC_METHOD``, unless set), as ``vllm serve`` does:
vLLM's default elsewhere is ``fork``, here from a worker thread of a running web server.
Scripts that start this backend need the ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rewardcal import formatting
from rewardcal.backends.base import BackendLimits, BackendStartError, RewardBackend
from rewardcal.errors import ErrorType, ServiceError
from rewardcal.log_context import request_id_var
from rewardcal.pipeline.artifacts import ModelArtifacts, load_model_artifacts

logger = logging.getLogger(__name__)

CPU_DEFAULT_KV_CACHE_BYTES = 2**30
"""KV cache on CPU when none is configured. vLLM's own CPU default reserves
``gpu_memory_utilization`` (90%) of RAM and refuses to start on a shared machine; scoring is
prefill only, and 1 GiB holds thousands of tokens in flight even for 8B models."""

WARM_UP_TEXT = "warm-up"


class VllmBackend(RewardBackend):
    name = "vllm"

    def __init__(
        self,
        model_path: Path,
        *,
        dtype: str = "float32",
        max_input_tokens: int = 512,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        kv_cache_memory_bytes: int | None = None,
        enforce_eager: bool = False,
        trust_remote_code: bool = False,
        engine_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        """``engine_overrides`` are extra ``AsyncEngineArgs`` fields (e.g. ``load_format=
        "dummy"`` for benchmarks of random weights); they win over the settings."""
        self._limits = BackendLimits(max_input_tokens, batches_itself=True)
        self.artifacts: ModelArtifacts | None = None
        self._model_path = model_path
        self._dtype = dtype
        self._requested_max_tokens = max_input_tokens
        self._max_model_len = max_model_len
        self._tensor_parallel_size = tensor_parallel_size
        self._gpu_memory_utilization = gpu_memory_utilization
        self._kv_cache_memory_bytes = kv_cache_memory_bytes
        self._enforce_eager = enforce_eager
        self._trust_remote_code = trust_remote_code
        self._engine_overrides = dict(engine_overrides or {})
        self._engine: Any = None
        self._pooling_params: Any = None  # vllm.PoolingParams, imported at start
        # stop() may come while the engine is still being built in a worker thread (the
        # app shut down during a 30 s start): the builder then shuts it down itself.
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def engine(self) -> Any:
        """The ``AsyncLLM`` (None before start and after stop)."""
        return self._engine

    @property
    def limits(self) -> BackendLimits:
        return self._limits

    async def start(self, artifacts: ModelArtifacts | None = None) -> None:
        if not (self._model_path / "config.json").is_file():
            raise BackendStartError(f"no config.json in model path {self._model_path}")
        # Importing vLLM and building the engine block for tens of seconds: off the event
        # loop, so /health keeps answering while the model loads.
        try:
            await asyncio.to_thread(self._build, artifacts)
        except BackendStartError:
            raise
        except Exception as exc:  # noqa: BLE001 - any engine failure becomes one line
            raise BackendStartError(
                f"vLLM engine failed to start for {self._model_path}: {_start_failure(exc)}"
            ) from exc
        try:
            await self._check_engine(self._engine)
        except BaseException:
            await self.stop()
            raise
        logger.info(
            "vLLM engine ready for %s, context %d tokens",
            self._model_path,
            self._limits.max_input_tokens,
        )

    def _build(self, artifacts: ModelArtifacts | None = None) -> None:
        """Load the tokenizer, import vLLM and start the engine (blocking).

        The engine is handed over through ``self._engine`` only, never returned or left in a
        local: vLLM keeps some frames of its start-up alive (their ``f_back`` chain reaches
        this frame), and an engine referenced from there would outlive ``stop()`` and only
        be collected at interpreter exit, where its ``__del__`` fails noisily.
        """
        if artifacts is None:
            artifacts = load_model_artifacts(
                self._model_path, trust_remote_code=self._trust_remote_code
            )
        context = artifacts.context_length
        max_model_len = self._max_model_len or min(self._requested_max_tokens, context)

        # Before vLLM reads its environment; see the module docstring.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        try:
            from vllm import PoolingParams
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.platforms import current_platform
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise BackendStartError(
                f"backend vllm needs vLLM installed (pip install -e '.[vllm]' on GPU hosts, "
                f"scripts/install_vllm_cpu.sh on CPU): {exc}"
            ) from exc

        kv_cache_bytes = self._kv_cache_memory_bytes
        if kv_cache_bytes is None and current_platform.is_cpu():
            kv_cache_bytes = CPU_DEFAULT_KV_CACHE_BYTES
        args: dict[str, Any] = dict(
            model=str(self._model_path),
            runner="pooling",
            convert="classify",
            dtype=self._dtype,
            max_model_len=max_model_len,
            tensor_parallel_size=self._tensor_parallel_size,
            gpu_memory_utilization=self._gpu_memory_utilization,
            kv_cache_memory_bytes=kv_cache_bytes,
            enforce_eager=self._enforce_eager,
            trust_remote_code=self._trust_remote_code,
            # Throughput is in our own metrics; vLLM's periodic stat lines add nothing.
            disable_log_stats=True,
        )
        args.update(self._engine_overrides)
        logger.info("starting vLLM engine: %s", args)
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))

        with self._lock:
            if self._stopped:
                engine.shutdown()
                raise BackendStartError("backend stopped while the vLLM engine was starting")
            self._engine = engine
        self.artifacts = artifacts
        self._pooling_params = PoolingParams
        engine_context = int(engine.model_config.max_model_len)
        del engine
        self._limits = BackendLimits(
            max_input_tokens=min(self._requested_max_tokens, engine_context),
            batches_itself=True,
        )

    async def _check_engine(self, engine: Any) -> None:
        """Refuse models vLLM cannot classify with, and run one forward pass now.

        Some failures only show at the first forward (e.g. an attention head size the CPU
        kernels lack); they belong to start-up, not to the first client request.
        """
        tasks = await engine.get_supported_tasks()
        if "classify" not in tasks:
            raise BackendStartError(
                f"vLLM cannot serve {self._model_path} as a reward model (supported tasks: "
                f"{', '.join(tasks) or 'none'}); a *ForSequenceClassification model is needed"
            )
        assert self.artifacts is not None
        ids, _ = formatting.encode(
            self.artifacts.tokenizer, [WARM_UP_TEXT], self._limits.max_input_tokens
        )
        try:
            await self._encode(engine, ids[0])
        except Exception as exc:  # noqa: BLE001
            raise BackendStartError(
                f"vLLM engine cannot score with {self._model_path}: {_one_line(exc)}"
            ) from exc

    async def stop(self) -> None:
        with self._lock:
            self._stopped = True
            engine, self._engine = self._engine, None
        if engine is not None:
            # On this loop, blocking it for the few seconds the engine takes to stop: from a
            # thread, the engine's output task would see the engine die first and log an
            # EngineDeadError traceback; here it is cancelled before it runs again.
            engine.shutdown()
            # AsyncLLM.__del__ shuts down again; left to interpreter exit, it runs after
            # vLLM's module globals are gone and prints an ignored TypeError traceback.
            del engine
            gc.collect()

    async def health(self) -> bool:
        engine = self._engine
        return engine is not None and not engine.errored

    async def score(self, batch: Sequence[Sequence[int]]) -> list[float]:
        if not batch:
            return []
        engine = self._engine
        if engine is None:
            raise ServiceError(ErrorType.NOT_READY, "the vLLM engine is not running")
        # One request per input, all in flight at once: vLLM batches them. A TaskGroup
        # cancels (and so aborts in the engine) the others when one fails.
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._encode(engine, ids)) for ids in batch]
        except* Exception as failures:
            first = failures.exceptions[0]
            logger.error("vLLM scoring failed: %s", _one_line(first), exc_info=first)
            raise ServiceError(
                ErrorType.BACKEND, f"vLLM engine failed to score: {_one_line(first)}"
            ) from None
        return [task.result() for task in tasks]

    async def _encode(self, engine: Any, ids: Sequence[int]) -> float:
        params = self._pooling_params(task="classify", use_activation=False)
        final = None
        async for output in engine.encode(
            {"prompt_token_ids": list(ids)}, params, request_id=_engine_request_id()
        ):
            final = output
        if final is None:
            raise RuntimeError("vLLM returned no output")
        return float(final.outputs.data.reshape(-1)[0])


def _engine_request_id() -> str:
    """The incoming X-Request-ID (so engine logs and ours name the same request), made
    unique per input: one request scores several inputs, and clients may reuse ids."""
    return f"{request_id_var.get()}-{uuid.uuid4().hex[:12]}"


def _start_failure(exc: BaseException) -> str:
    if "Engine core initialization failed" in str(exc):
        # The cause was raised in the engine process, which logged it; this process only
        # learns that the engine died.
        return (
            "the engine process failed while loading the model (its log above has the cause; "
            "most often memory: lower gpu_memory_utilization, kv_cache_memory_bytes or "
            "max_model_len)"
        )
    return _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text}"
