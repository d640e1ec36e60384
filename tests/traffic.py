"""Realistic traffic: the AlpacaEval responses shipped in service/data."""

from __future__ import annotations

import gzip
import json
from importlib import resources


def alpaca_items(limit: int | None = None) -> list[dict[str, str]]:
    """(prompt, response) pairs from three real LLMs of very different verbosity."""
    path = resources.files("service") / "data" / "alpacaeval-outputs-3models.jsonl.gz"
    items = []
    with gzip.open(str(path), "rt", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            items.append({"prompt": row["instruction"], "response": row["output"]})
            if limit is not None and len(items) >= limit:
                break
    return items
