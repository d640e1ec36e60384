"""Native protocol: POST /v1/rewards and POST /v1/rewards/compare."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rewardcal_client.protocol.common import (
    CalibrationInfo,
    CalibrationOptions,
    ChatMessage,
    Text,
    Usage,
)


class RewardItem(BaseModel):
    """Either a (prompt, response) pair or a conversation whose last assistant turn is judged."""

    model_config = ConfigDict(extra="forbid")

    prompt: Text | None = None
    response: Text | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_form(self) -> RewardItem:
        pair = self.prompt is not None or self.response is not None
        if pair and self.messages is not None:
            raise ValueError("give either prompt and response, or messages, not both")
        if self.messages is None and (self.prompt is None or self.response is None):
            raise ValueError("an item needs prompt and response, or messages")
        if self.messages is not None and not any(m.role == "assistant" for m in self.messages):
            raise ValueError("messages need an assistant turn to judge")
        return self


class RewardsRequest(CalibrationOptions):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"prompt": "What is 2+2?", "response": "4."},
                        {
                            "messages": [
                                {"role": "user", "content": "Name a prime."},
                                {"role": "assistant", "content": "7 is prime."},
                            ]
                        },
                    ],
                    "calibration_group": "run-42",
                }
            ]
        },
    )

    model: Text | None = Field(default=None, description="A served model id (see /v1/models).")
    items: list[RewardItem] = Field(min_length=1)


class RewardDatum(BaseModel):
    index: int
    reward: float = Field(description="Calibrated reward (= raw_reward when uncalibrated).")
    raw_reward: float = Field(description="The reward model's own score (first logit).")
    bias: float = Field(description="What calibration removed: raw_reward - reward.")
    features: dict[str, float] = Field(
        description="Bias characteristics of the response: chars, tokens, markdown."
    )


class RewardsResponse(BaseModel):
    object: str = "list"
    model: str
    calibration: CalibrationInfo
    data: list[RewardDatum]
    usage: Usage


class ComparePair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Text
    chosen: Text
    rejected: Text


class CompareRequest(CalibrationOptions):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "pairs": [
                        {
                            "prompt": "Explain recursion.",
                            "chosen": "A function that calls itself on a smaller input.",
                            "rejected": "Recursion.",
                        }
                    ]
                }
            ]
        },
    )

    model: Text | None = None
    pairs: list[ComparePair] = Field(min_length=1)


class CompareSide(BaseModel):
    reward: float
    raw_reward: float
    bias: float
    features: dict[str, float]


class CompareDatum(BaseModel):
    index: int
    chosen: CompareSide
    rejected: CompareSide
    margin: float = Field(description="Calibrated reward(chosen) - reward(rejected).")
    raw_margin: float
    p_chosen: float = Field(description="sigmoid(margin): Bradley-Terry P(chosen preferred).")
    raw_p_chosen: float


class CompareResponse(BaseModel):
    object: str = "list"
    model: str
    calibration: CalibrationInfo
    data: list[CompareDatum]
    usage: Usage
