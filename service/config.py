"""The one settings object.

Every knob lives here, read from ``REWARDCAL_*`` environment variables (or a ``.env`` file)
and overridable by ``rewardcal serve --flag``. Nothing else reads the environment. Bad
combinations are refused when the settings are built, with one line that names the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rewardcal.calibration.config import FLAT_ALPHA, FeatureStep, StreamConfig, unflatten

BackendName = Literal["transformers", "vllm", "remote"]
TruncationPolicy = Literal["left", "right", "error"]


# Default token budgets of a forward pass. On CPU a padded batch costs about as much per
# input as single passes once it holds ~2k tokens, and more beyond (default model, 2
# cores, bench/RESULTS.md "batch shapes"); accelerators keep gaining from bigger batches.
CPU_BATCH_TOKENS = 2048
ACCELERATOR_BATCH_TOKENS = 16384


CALIBRATION_PREFIX = "calibration_"


def _calibration_knobs() -> dict[str, FieldInfo]:
    """The nested config's knobs in their flat form: features as names, one alpha."""
    knobs: dict[str, FieldInfo] = {}
    for name, field in StreamConfig.model_fields.items():
        if name != "features":
            knobs[name] = field
            continue
        default = ",".join(step.feature for step in StreamConfig().features)
        knobs[name] = FieldInfo(
            default=default,
            description=f"{field.description} Comma-separated: chars, tokens, markdown.",
        )
        knobs[FLAT_ALPHA] = FieldInfo(
            default=FeatureStep.model_fields["alpha"].default,
            description="Strength of removal of every feature step (paper: 1.0).",
        )
    return knobs


CALIBRATION_KNOBS = _calibration_knobs()
"""Flat name (without the prefix) -> field, in the order the README lists them."""


class Settings(BaseSettings):
    """Service settings. Each field says what it trades off."""

    model_config = SettingsConfigDict(
        env_prefix="REWARDCAL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        # REWARDCAL_CALIBRATION_FRAC reaches the nested config as calibration.frac: a
        # variable is split once, after the field's name (see _nest_calibration).
        env_nested_delimiter="_",
        env_nested_max_split=1,
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

    # --- calibration (each new stream starts from this config) -----------------------------
    calibration: StreamConfig = Field(
        default_factory=StreamConfig,
        description="The calibration every new stream starts with; each knob is its own "
        "setting, REWARDCAL_CALIBRATION_<KNOB> or --calibration-<knob> (features as "
        "comma-separated names, alpha the strength of every feature step).",
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
    calibration_refit_cpu_share: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Most of one core background refits use: after a refit that took t "
        "seconds the next waits t/share - t (a 16k-sample auto-span refit takes ~50-100 ms: "
        "at most one per 1-2 s under load). Operator refits are not limited.",
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

    @model_validator(mode="before")
    @classmethod
    def _nest_calibration(cls, data: Any) -> Any:
        """Gather the calibration knobs into the nested config, whichever way they came:
        ``calibration_frac=0.3`` (flags, keyword arguments) or the environment's
        REWARDCAL_CALIBRATION_FRAC (split into ``calibration: {frac: ...}``). Flat values
        win over nested ones. The environment's split also catches the service's own
        calibration_* settings and unknown variables: like every REWARDCAL_ variable the
        settings do not know, those are ignored here."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        nested = data.get("calibration")
        if isinstance(nested, StreamConfig):
            nested = nested.model_dump()
        flat = dict(nested) if isinstance(nested, Mapping) else {}
        for key in list(data):
            knob = key.removeprefix(CALIBRATION_PREFIX)
            if key.startswith(CALIBRATION_PREFIX) and knob in CALIBRATION_KNOBS:
                flat[knob] = data.pop(key)
        if nested is not None or flat:
            known = {k: v for k, v in flat.items() if k in CALIBRATION_KNOBS}
            data["calibration"] = unflatten(known)
        return data

    @field_validator("api_keys", "admin_api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
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
        return self.calibration


def settings_fields() -> dict[str, FieldInfo]:
    """Every setting under the name of its variable (REWARDCAL_ + NAME) and flag
    (--name): Settings' own fields, with ``calibration`` spelled out knob by knob
    (``calibration_frac``, ...). What the CLI offers and the README table lists."""
    fields: dict[str, FieldInfo] = {}
    for name, field in Settings.model_fields.items():
        if name == "calibration":
            fields.update({CALIBRATION_PREFIX + knob: f for knob, f in CALIBRATION_KNOBS.items()})
        else:
            fields[name] = field
    return fields
