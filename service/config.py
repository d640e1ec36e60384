"""The one settings object.

Every knob lives here, read from ``REWARDCAL_*`` environment variables (or a ``.env`` file)
and overridable by ``rewardcal serve --flag``. Nothing else reads the environment. Bad
combinations are refused when the settings are built, with one line that names the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rewardcal.calibration.config import MAX_ALPHA, FeatureStep, StreamConfig

BackendName = Literal["transformers", "vllm", "remote"]
CalibrationMethod = Literal["lowess", "mean", "penalty", "none"]
CalibrationCenter = Literal["none", "mean"]
TruncationPolicy = Literal["left", "right", "error"]


# Default token budgets of a forward pass. On CPU a padded batch costs about as much per
# input as single passes once it holds ~2k tokens, and more beyond (default model, 2
# cores, bench/RESULTS.md "batch shapes"); accelerators keep gaining from bigger batches.
CPU_BATCH_TOKENS = 2048
ACCELERATOR_BATCH_TOKENS = 16384


class Settings(BaseSettings):
    """Service settings. Each field says what it trades off."""

    model_config = SettingsConfigDict(
        env_prefix="REWARDCAL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # --- model and backend -------------------------------------------------------------
    model_path: Path | None = Field(
        default=None,
        description="Local directory of a *ForSequenceClassification reward model. "
        "Empty means the embedded default model (built on first use).",
    )
    served_model_name: str | None = Field(
        default=None,
        description="Model id clients send in `model` and see in /v1/models "
        "(default: the model directory's name).",
    )
    backend: BackendName = Field(
        default="transformers",
        description="transformers (CPU/GPU, our batcher), vllm (in-process engine), "
        "remote (an existing vLLM server's /classify).",
    )
    device: str = Field(default="cpu", description="torch device for the transformers backend.")
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32",
        description="Compute dtype. float32 on CPU (half precision is ~10x slower there).",
    )
    cache_dir: Path = Field(
        default=Path("~/.cache/rewardcal"),
        description="Where the default model is built and cached (outside git).",
    )

    # --- vllm backend (in-process engine) ---------------------------------------------------
    tensor_parallel_size: int = Field(
        default=1,
        ge=1,
        description="vllm: GPUs the model is split over. More = room for bigger models and "
        "KV cache, at the cost of inter-GPU traffic per forward pass.",
    )
    gpu_memory_utilization: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="vllm: share of GPU memory the engine takes for weights + KV cache "
        "(ignored when kv_cache_memory_bytes is set). Lower it when other processes share "
        "the GPU; higher = more inputs in flight.",
    )
    kv_cache_memory_bytes: int | None = Field(
        default=None,
        gt=0,
        description="vllm: KV cache size in bytes; overrides gpu_memory_utilization. Scoring "
        "is prefill only, so the cache only holds the inputs in flight. Unset: "
        "gpu_memory_utilization on GPU, 1 GiB on CPU (vLLM's CPU default would reserve 90% "
        "of RAM).",
    )
    max_model_len: int | None = Field(
        default=None,
        gt=1,
        description="vllm: context the engine is sized for (vLLM's --max-model-len). "
        "Unset: max_input_tokens capped by the model's context. Longer than max_input_tokens "
        "only wastes KV cache.",
    )
    enforce_eager: bool = Field(
        default=False,
        description="vllm: no CUDA graphs / torch.compile. Starts tens of seconds faster, "
        "scores small batches slower.",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Run the model repository's own Python code (custom architectures). "
        "Only for models you trust.",
    )

    # --- remote backend (an existing vLLM server) ---------------------------------------------
    remote_url: str | None = Field(
        default=None,
        description="remote: base URL of a vLLM server (e.g. http://gpu-host:8000); the "
        "service scores through its /classify. model_path gives the local tokenizer.",
    )
    remote_model: str | None = Field(
        default=None,
        description="remote: model name sent to the server (default: the only model it serves).",
    )
    remote_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="remote: timeout of one /classify call. Too low fails big batches on a "
        "busy server; too high holds connections to a hung one.",
    )
    remote_retries: int = Field(
        default=3,
        ge=0,
        description="remote: retries after connection errors and 5xx answers (exponential "
        "backoff; 4xx are never retried). More = rides out server restarts, slower failures.",
    )

    # --- batching and admission ----------------------------------------------------------
    max_batch_tokens: int | None = Field(
        default=None,
        gt=0,
        description="transformers backend only (vllm and remote batch themselves): token "
        "budget of one forward pass, counted as batch size x longest input (padded tokens). "
        "Unset: 2048 on CPU (where bigger batches cost more per input: bench/RESULTS.md), "
        "16384 on GPU. Higher = fuller batches and more memory per batch.",
    )
    max_batch_size: int = Field(
        default=32,
        gt=0,
        description="transformers backend only: most inputs in one forward pass.",
    )
    max_wait_ms: float = Field(
        default=5.0,
        ge=0,
        description="transformers backend only: how long a non-full batch waits for more "
        "inputs. Higher = fuller batches under light load, more latency for a lone request.",
    )
    max_queue: int = Field(
        default=1024,
        gt=0,
        description="Most inputs in flight (admitted and not yet answered, any backend); "
        "beyond it requests get 503 + Retry-After at once instead of piling up.",
    )
    tokenizer_workers: int = Field(
        default=1,
        gt=0,
        le=64,
        description="Tokenizer threads. Each takes all queued requests' texts in one "
        "batched encode, so one keeps up with hundreds of requests per second; more help "
        "with long texts on many cores.",
    )
    max_items_per_request: int = Field(
        default=512, gt=0, description="Most items in one request (413 beyond)."
    )
    max_body_bytes: int = Field(
        default=16 * 2**20, gt=0, description="Largest request body (413 beyond)."
    )
    max_input_tokens: int = Field(
        default=512,
        gt=1,
        description="Longest scored input; capped by the model's own context length.",
    )
    truncation: TruncationPolicy = Field(
        default="left",
        description="Over-long inputs: keep the end (left: drops the prompt's start, keeps "
        "the response a reward model judges), keep the start (right), or refuse (error: 422).",
    )
    request_timeout_s: float = Field(
        default=300.0, gt=0, description="A request still unanswered after this gets 504."
    )
    retry_after_s: int = Field(
        default=1, ge=1, description="Retry-After header value on 503 overload answers."
    )

    # --- server and security ------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Bind address (loopback by default).")
    port: int = Field(default=8000, ge=0, le=65535)
    # NoDecode: the environment gives a comma-separated list, not JSON.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Accepted Bearer keys (comma-separated in the environment). Empty = open.",
    )
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Bearer keys that may also change calibration state (freeze, unfreeze, "
        "reset, refit, import, delete); scoring keys get 403 there. With any key of either "
        "kind set, every route but /health needs one (docs/security.md).",
    )
    protect_metrics: bool = Field(
        default=False,
        description="Require a key for /metrics, /docs and /openapi.json too (/health stays open).",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A connection that has not sent a request's complete headers within "
        "this many seconds is closed (slow or stalled clients cannot hold connections).",
    )
    workers: int = Field(
        default=1,
        ge=1,
        description="Worker processes on one port (more front-end cores; each loads the "
        "model). More than 1 needs a shared calibration_store.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    state_dir: Path = Field(
        default=Path("~/.local/state/rewardcal"),
        description="Where calibration snapshots are written and loaded.",
    )

    # --- calibration defaults (each new stream starts from these) ----------------------------
    calibration_method: CalibrationMethod = Field(
        default="lowess",
        description="lowess: the paper's RC-LWR (default); mean: RC-Mean; penalty: "
        "raw - coef x length; none: reward = raw.",
    )
    calibration_features: Annotated[list[Literal["chars", "tokens", "markdown"]], NoDecode] = Field(
        default_factory=lambda: ["chars"],  # type: ignore[arg-type]
        description="Bias characteristics removed in sequence (comma-separated).",
    )
    calibration_alpha: float = Field(
        default=1.0, ge=0, le=MAX_ALPHA, description="Strength of removal."
    )
    calibration_frac: float | Literal["auto"] = Field(
        default="auto",
        description="LOWESS span: auto (default) lets each refit choose it by "
        "leave-one-out cross-validation on the window; a number in (0, 1] fixes it "
        "(1.0: the paper's RewardBench setting, smoothest; 0.3: its AlpacaEval setting).",
    )
    calibration_center: CalibrationCenter = Field(
        default="none", description="none: residuals near 0 (paper); mean: keep reward level."
    )
    calibration_window: int = Field(
        default=16384,
        ge=16,
        description="Rolling window per stream: longer = steadier curve, slower to follow "
        "a policy that drifts.",
    )
    calibration_min_samples: int = Field(
        default=256, ge=2, description="Observations before the first curve is fitted."
    )
    calibration_refit_every: int = Field(
        default=256, ge=1, description="Refit after this many new observations..."
    )
    calibration_refit_interval_s: float = Field(
        default=30.0, gt=0, description="...or after this many seconds, whichever first."
    )
    calibration_standardize: bool = Field(
        default=False,
        description="Standardize calibrated rewards by the window's mean and std.",
    )
    calibration_clip: float | None = Field(
        default=None, gt=0, description="Clip final rewards to +-clip."
    )
    calibration_max_groups: int = Field(
        default=64,
        ge=1,
        description="Most calibration streams (bounds memory and metric label cardinality).",
    )
    calibration_idle_ttl_s: float = Field(
        default=3 * 86400.0,
        ge=0,
        description="A group that no request or operator used for this long is deleted "
        "(window, curve and snapshot), freeing its slot. 0 = never.",
    )
    calibration_store: str = Field(
        default="memory",
        description="memory: streams live in this process, snapshots in state_dir (one "
        "worker). redis://host:port/db or rediss://...: one calibration shared by every "
        "worker and replica (docs/scale-out.md).",
    )
    calibration_store_password: SecretStr | None = Field(
        default=None, description="Redis password (or put it in the URL)."
    )
    calibration_store_stale_after_s: float = Field(
        default=10.0,
        gt=0,
        description="Shared store: responses say status stale when the store has not "
        "answered for this long (the last curve still applies).",
    )
    calibration_lock_ttl_s: float = Field(
        default=10.0,
        gt=0,
        description="Shared store: refit lock TTL, renewed while fitting; a dead holder is "
        "replaced after at most this long.",
    )
    snapshot_interval_s: float = Field(
        default=30.0, gt=0, description="How often changed streams are written to state_dir."
    )

    @field_validator("api_keys", "admin_api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("calibration_features", mode="before")
    @classmethod
    def _split_features(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("calibration_frac", mode="after")
    @classmethod
    def _check_frac(cls, value: float | str) -> float | str:
        if value != "auto" and not 0.0 < float(value) <= 1.0:
            raise ValueError(f"calibration_frac must be 'auto' or in (0, 1], got {value!r}")
        return value

    @field_validator("cache_dir", "state_dir", "model_path", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("calibration_store", mode="after")
    @classmethod
    def _check_store(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("redis://", "rediss://")):
            raise ValueError(
                f"calibration_store must be memory, redis://... or rediss://..., got {value!r}"
            )
        return value

    @field_validator("remote_url", mode="after")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"remote_url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if self.max_items_per_request > self.max_queue:
            raise ValueError(
                f"max_items_per_request ({self.max_items_per_request}) exceeds max_queue "
                f"({self.max_queue}): such a request could never be admitted"
            )
        if self.max_batch_size > self.max_queue:
            raise ValueError(
                f"max_batch_size ({self.max_batch_size}) exceeds max_queue ({self.max_queue})"
            )
        if self.device == "cpu" and self.dtype != "float32" and self.backend == "transformers":
            raise ValueError(
                f"dtype {self.dtype} on device cpu: use float32 on CPU (half precision is "
                "slower there and not what the model was checked with)"
            )
        if self.backend == "remote" and not self.remote_url:
            raise ValueError("backend remote needs remote_url (the vLLM server to score through)")
        if self.backend == "remote" and self.model_path is None:
            raise ValueError(
                "backend remote needs model_path: the local directory of the served model's "
                "tokenizer (inputs are tokenized here and sent as token ids)"
            )
        if self.max_model_len is not None and self.max_model_len < self.max_input_tokens:
            raise ValueError(
                f"max_model_len ({self.max_model_len}) is below max_input_tokens "
                f"({self.max_input_tokens}): accepted inputs would not fit the engine; lower "
                "max_input_tokens too"
            )
        if self.workers > 1 and not self.shared_store:
            raise ValueError(
                "workers > 1 needs a shared calibration store (calibration_store "
                "redis://...): with the memory store each worker would fit its own curve"
            )
        if not self.calibration_features:
            raise ValueError("calibration_features must name at least one feature")
        if self.calibration_min_samples > self.calibration_window:
            raise ValueError(
                f"calibration_min_samples ({self.calibration_min_samples}) exceeds "
                f"calibration_window ({self.calibration_window})"
            )
        return self

    @property
    def shared_store(self) -> bool:
        return self.calibration_store != "memory"

    @property
    def keys_required(self) -> bool:
        return bool(self.api_keys or self.admin_api_keys)

    @property
    def batch_token_budget(self) -> int:
        """max_batch_tokens, or its default for the device (transformers backend only)."""
        if self.max_batch_tokens is not None:
            return self.max_batch_tokens
        return CPU_BATCH_TOKENS if self.device == "cpu" else ACCELERATOR_BATCH_TOKENS

    def stream_defaults(self) -> StreamConfig:
        """The calibration config every new stream starts with."""
        return StreamConfig(
            method=self.calibration_method,
            features=tuple(
                FeatureStep(feature=name, alpha=self.calibration_alpha)
                for name in self.calibration_features
            ),
            frac=self.calibration_frac,
            center=self.calibration_center,
            window=self.calibration_window,
            min_samples=self.calibration_min_samples,
            refit_every=self.calibration_refit_every,
            refit_interval_s=self.calibration_refit_interval_s,
            standardize=self.calibration_standardize,
            clip=self.calibration_clip,
        )
