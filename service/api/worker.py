"""The app of one worker process when ``workers`` > 1.

uvicorn's process manager imports ``create_worker_app`` in each spawned worker; the
parent hands the validated settings over in one environment variable (JSON, secrets
included: it only travels to the parent's own children).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import SecretStr

from rewardcal.config import Settings

WORKER_SETTINGS_ENV = "REWARDCAL_WORKER_SETTINGS"


def settings_json(settings: Settings, model_path: Path) -> str:
    data: dict[str, Any] = settings.model_dump(mode="python")
    for name, value in data.items():
        if isinstance(value, SecretStr):
            data[name] = value.get_secret_value()
        elif isinstance(value, list) and value and isinstance(value[0], SecretStr):
            data[name] = [v.get_secret_value() for v in value]
    data["model_path"] = str(model_path)
    return json.dumps(data, default=str)


def create_worker_app() -> FastAPI:
    from rewardcal.api.app import create_app
    from rewardcal.log_context import configure_logging

    data = json.loads(os.environ[WORKER_SETTINGS_ENV])
    settings = Settings(**data)
    configure_logging(settings.log_level)
    assert settings.model_path is not None
    return create_app(settings, settings.model_path, freeze_heap=True)
