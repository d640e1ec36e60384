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

BackendName = Literal["transformers", "vllm", "remote"]
CalibrationMethod = Literal["lowess", "mean", "penalty", "none"]
CalibrationCenter = Literal["none", "mean"]
TruncationPolicy = Literal["left", "right", "error"]


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

    # --- batching and admission ----------------------------------------------------------
    max_batch_tokens: int = Field(
        default=16384,
        gt=0,
        description="Token budget of one forward pass, counted as batch size x longest "
        "input (padded tokens). Higher = better throughput, more memory per batch.",
    )
    max_batch_size: int = Field(default=32, gt=0, description="Most inputs in one forward pass.")
    max_wait_ms: float = Field(
        default=5.0,
        ge=0,
        description="How long a non-full batch waits for more inputs. Higher = fuller "
        "batches under light load, more latency for a lone request.",
    )
    max_queue: int = Field(
        default=1024,
        gt=0,
        description="Most inputs waiting for inference; beyond it requests get 503 + "
        "Retry-After at once instead of piling up.",
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
    protect_metrics: bool = Field(
        default=False, description="Require a key for /metrics too (/health stays open)."
    )
    workers: int = Field(default=1, ge=1, description="uvicorn worker processes.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    state_dir: Path = Field(
        default=Path("~/.local/state/rewardcal"),
        description="Where calibration snapshots are written and loaded.",
    )

    # --- calibration defaults ------------------------------------------------------------
    calibration_method: CalibrationMethod = Field(
        default="none",
        description="Default method of new calibration streams "
        "(lowess: the paper's RC-LWR; none: reward = raw).",
    )
    calibration_features: Annotated[list[Literal["chars", "tokens", "markdown"]], NoDecode] = Field(
        default_factory=lambda: ["chars"],  # type: ignore[arg-type]
        description="Bias characteristics removed in sequence.",
    )
    calibration_alpha: float = Field(default=1.0, ge=0, description="Strength of removal.")
    calibration_frac: float = Field(
        default=1.0, gt=0, le=1, description="LOWESS span (paper: 1.0 RewardBench, 0.3 AlpacaEval)."
    )
    calibration_center: CalibrationCenter = Field(
        default="none", description="none: residuals near 0 (paper); mean: keep reward level."
    )
    calibration_window: int = Field(default=16384, gt=0, description="Rolling window size.")
    calibration_min_samples: int = Field(
        default=256, gt=1, description="Observations before the first curve is fitted."
    )

    @field_validator("api_keys", mode="before")
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

    @field_validator("cache_dir", "state_dir", "model_path", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

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
        if self.backend == "remote" and self.model_path is None and not self.served_model_name:
            raise ValueError("backend remote needs model_path (tokenizer) or served_model_name")
        if self.workers > 1:
            raise ValueError(
                "workers > 1 is not supported: calibration streams and the batching queue "
                "live in one process; run one process per GPU behind a load balancer"
            )
        if not self.calibration_features:
            raise ValueError("calibration_features must name at least one feature")
        return self
