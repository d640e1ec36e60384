"""Operational endpoints: health, readiness, served models."""

from __future__ import annotations

from pydantic import BaseModel


class HealthResponse(BaseModel):
    status: str = "ok"


class ReadyResponse(BaseModel):
    ready: bool
    model: str
    backend: str
    detail: str | None = None


class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "rewardcal"
    root: str
    max_model_len: int
    backend: str


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]
