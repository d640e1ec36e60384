"""OpenRLHF remote reward model protocol: POST /get_reward.

OpenRLHF v0.8 posts whole batches (`query` is a list); v0.9+ posts one sample per request.
Both shapes are accepted; a bare string is taken as a one-element list.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rewardcal_client.protocol.common import Text


class GetRewardRequest(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "query": ["user: What is 2+2?\nassistant: 4.\n"],
                    "prompts": ["user: What is 2+2?\nassistant: "],
                    "labels": ["4"],
                }
            ]
        },
    )

    query: list[Text] = Field(
        min_length=1,
        description="Full templated texts (prompt + response), as OpenRLHF sends them.",
    )
    prompts: list[Text | None] | None = Field(
        default=None,
        description="The templated prompt of each query; the response (whose length is "
        "the bias feature) is query[len(prompt):] when the query starts with it; without "
        "it, the response is located with the model's chat template.",
    )
    labels: list[Any] | None = Field(default=None, description="Ignored; accepted for OpenRLHF.")
    calibration_group: str | None = Field(default=None, max_length=64)
    observe: bool = True

    @field_validator("query", "prompts", "labels", mode="before")
    @classmethod
    def _single_to_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        return value

    @model_validator(mode="after")
    def _one_prompt_and_label_per_query(self) -> GetRewardRequest:
        for name, values in (("prompts", self.prompts), ("labels", self.labels)):
            if values is not None and len(values) != len(self.query):
                raise ValueError(f"{name} has {len(values)} entries for {len(self.query)} queries")
        return self


class GetRewardResponse(BaseModel):
    rewards: list[float] = Field(description="Calibrated rewards (OpenRLHF reads this key).")
    scores: list[float] = Field(description="Same as rewards (newer OpenRLHF reads `scores`).")
    extra_logs: dict[str, list[float]] = Field(
        description="Per-sample logs OpenRLHF records: raw_reward, bias, response_chars, "
        "response_tokens, calibration_version, response_located (1: the response was "
        "`query[len(prompt):]` or located with the chat template; 0: the template could not "
        "locate it and the whole query was measured)."
    )
