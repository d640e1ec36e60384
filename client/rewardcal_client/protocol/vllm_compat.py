"""vLLM's /classify and /pooling shapes, as vLLM clients and verl send them."""

from __future__ import annotations

from typing import cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rewardcal_client.protocol.common import CalibrationInfo, ChatMessage, Text

InputType = Text | list[Text] | list[int] | list[list[int]]

MAX_TOKEN_ID = 2**31 - 1


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [{"model": "default-rm", "input": ["user: hi\nassistant: hello\n"]}]
        },
    )

    model: Text | None = None
    input: InputType | None = Field(
        default=None,
        description="Templated text(s) or token ids. The response measured for the bias "
        "feature is located with the model's chat template (after the last assistant "
        "header, before its end-of-turn); the whole text when the template cannot locate it "
        "(see data[i].response_located).",
    )
    messages: list[ChatMessage] | None = Field(
        default=None,
        min_length=1,
        description="A conversation, rendered with the model's chat template.",
    )
    use_activation: bool | None = Field(
        default=None,
        description="Apply sigmoid to the score (vLLM default: true); false for raw rewards.",
    )
    activation: bool | None = Field(default=None, description="Legacy name of use_activation.")
    truncate_prompt_tokens: int | None = Field(
        default=None, ge=-1, description="Keep the last k tokens; -1 = the model's limit."
    )
    task: str | None = Field(default=None, description="/pooling only: classify (or absent).")
    calibration_group: str | None = Field(default=None, max_length=64)
    observe: bool = True

    @model_validator(mode="after")
    def _one_input(self) -> ClassifyRequest:
        if (self.input is None) == (self.messages is None):
            raise ValueError("give exactly one of input or messages")
        if isinstance(self.input, list) and len(self.input) == 0:
            raise ValueError("input is empty")
        if isinstance(self.input, list) and not isinstance(self.input[0], str):
            rows = self.input if isinstance(self.input[0], list) else [self.input]
            for ids in cast(list[list[int]], rows):
                if ids and (min(ids) < 0 or max(ids) > MAX_TOKEN_ID):
                    raise ValueError(f"token ids must lie in [0, {MAX_TOKEN_ID}]")
        return self

    @property
    def apply_activation(self) -> bool:
        if self.use_activation is not None:
            return self.use_activation
        if self.activation is not None:
            return self.activation
        return True


class VllmUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0
    prompt_tokens_details: None = None


class ClassifyDatum(BaseModel):
    index: int
    label: str | None
    probs: list[float] = Field(description="[calibrated score] (sigmoid of it if activation).")
    num_classes: int = 1
    raw_reward: float
    reward: float
    response_located: bool | None = Field(
        default=None,
        description="Text input: true when the chat template located the response inside "
        "it (its length is what calibration measures), false when it could not and the "
        "whole text was measured; null for messages.",
    )


class ClassifyResponse(BaseModel):
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[ClassifyDatum]
    usage: VllmUsage
    calibration: CalibrationInfo


class PoolingDatum(BaseModel):
    index: int
    object: str = "pooling"
    data: list[float] = Field(description="vLLM's pooled output: [calibrated score].")
    probs: list[float] = Field(description="Same as data, for clients of /classify.")
    raw_reward: float
    reward: float
    response_located: bool | None = Field(
        default=None,
        description="Text input: true when the chat template located the response inside "
        "it (its length is what calibration measures), false when it could not and the "
        "whole text was measured; null for messages.",
    )


class PoolingResponse(BaseModel):
    id: str
    object: str = "list"
    created: int
    model: str
    data: list[PoolingDatum]
    usage: VllmUsage
    calibration: CalibrationInfo
