"""The data files shipped in ``rewardcal/data``, read in one place.

The AlpacaEval responses (2,415 answers of alpaca-7b, claude-2 and gpt4_1106_preview to the
805 AlpacaEval instructions, ``data/README.md``) are the project's realistic traffic: the
default model's length-bias check, the load of the benchmarks and the GPU check, and the
tests. Everything that needs them calls :func:`alpacaeval_outputs` or
:func:`alpacaeval_items`.

Files are found through ``importlib.resources`` on the package, so an installed wheel, an
editable install and the container image all read the same bytes.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

ALPACAEVAL_OUTPUTS = "alpacaeval-outputs-3models.jsonl.gz"


def data_file(name: str) -> Traversable:
    """A file of the package's ``data`` folder."""
    return resources.files("rewardcal") / "data" / name


def read_jsonl_gz(source: Traversable, limit: int | None = None) -> list[dict[str, Any]]:
    """The JSON objects of a gzipped JSON-lines file (blank lines skipped), at most ``limit``."""
    rows: list[dict[str, Any]] = []
    with source.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as handle:
        for line in handle:
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                rows.append(json.loads(line))
    return rows


@dataclass(frozen=True)
class AlpacaEvalOutput:
    """One model's answer to one AlpacaEval instruction (``index`` 0..804)."""

    generator: str
    index: int
    instruction: str
    output: str

    def item(self) -> dict[str, str]:
        """As a ``/v1/rewards`` item."""
        return {"prompt": self.instruction, "response": self.output}


def alpacaeval_outputs(limit: int | None = None) -> list[AlpacaEvalOutput]:
    """The shipped AlpacaEval responses in file order (grouped by generator), or the first
    ``limit`` of them."""
    return [
        AlpacaEvalOutput(
            generator=str(row["generator"]),
            index=int(row["index"]),
            instruction=str(row["instruction"]),
            output=str(row["output"]),
        )
        for row in read_jsonl_gz(data_file(ALPACAEVAL_OUTPUTS), limit)
    ]


def alpacaeval_items(limit: int | None = None) -> list[dict[str, str]]:
    """The responses as ``{"prompt", "response"}`` items: three real LLMs of very different
    verbosity, what a length-biased reward model is measured on."""
    return [output.item() for output in alpacaeval_outputs(limit)]
