"""Shapes shared by the protocols."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

INVALID_UNICODE = "invalid_unicode"


def _valid_unicode(value: str) -> str:
    # JSON's \uD83D escapes decode to lone surrogates, which no tokenizer can encode: refuse
    # them here (400) instead of failing inside a batch shared with other clients.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError(
            INVALID_UNICODE,
            "text is not valid Unicode (lone surrogate at character {position})",
            {"position": exc.start},
        ) from None
    return value


Text = Annotated[str, AfterValidator(_valid_unicode)]
"""A string that is valid Unicode (encodable as UTF-8); every client text uses it."""


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Text = Field(
        default="", description="Text; null (OpenAI tool-call turns) is the empty string."
    )
    tool_calls: list[dict[str, Any]] | None = Field(
        default=None,
        description="Assistant tool calls in the OpenAI shape ({type, function: {name, "
        "arguments}}): rendered by the model's chat template when it supports them, else "
        "appended to the content as <tool_call>{name, arguments}</tool_call> lines.",
    )
    tool_call_id: str | None = Field(default=None, max_length=256)

    @field_validator("content", mode="before")
    @classmethod
    def _null_content(cls, value: object) -> object:
        return "" if value is None else value


class CalibrationInfo(BaseModel):
    """Which curve calibrated a response: reproducible rewards need the version."""

    group: str = Field(description="Calibration stream (one per training run).")
    version: int = Field(description="Curve version; 0 before the first fit.")
    status: str = Field(
        description="uncalibrated (method none), warming_up (fewer than min_samples: "
        "reward = raw), reference (a loaded reference curve), calibrated, frozen."
    )
    method: str = Field(description="lowess, mean, penalty or none.")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class CalibrationOptions(BaseModel):
    """Fields every scoring request may carry."""

    calibration_group: str | None = Field(
        default=None,
        max_length=64,
        description="Calibration stream; the X-Calibration-Group header also sets it. "
        "Default: `default`.",
    )
    observe: bool = Field(
        default=True,
        description="Add this request's (length, reward) samples to the stream's window. "
        "Set false for evaluation traffic so it does not move the training curve.",
    )
