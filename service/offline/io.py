"""Reading and writing the tables ``rewardcal calibrate`` works on.

Formats are chosen by extension, with an optional ``.gz`` on top:

- ``.jsonl`` / ``.ndjson``: one JSON object per line;
- ``.csv``: a header row, then one row per record (cells stay strings until a column is
  read as a number; cells holding a JSON list, like ``[0.25]``, are decoded on demand);
- ``.json``: a list of objects, or an object of equal-length columns (the shape RewardBench
  writes its per-sample score dumps in), written back in the shape it was read in.

Every problem with the file itself is an :class:`InputError` whose message is one line.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

Format = Literal["jsonl", "csv", "json"]
Shape = Literal["records", "columns"]

_EXTENSIONS: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".json": "json",
}


class InputError(Exception):
    """Bad input: the file cannot be read or lacks what the command needs (exit code 2)."""


@dataclass
class Table:
    """Rows of a file, in order, with what is needed to write them back the same way."""

    rows: list[dict[str, Any]]
    fmt: Format
    columns: list[str] = field(default_factory=list)  # first-seen order of the keys
    shape: Shape = "records"  # .json only: a list of rows, or an object of columns


def table_format(path: Path) -> Format | None:
    """The format named by ``path``'s extension (``.gz`` ignored); None if unknown."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return _EXTENSIONS.get(suffixes[-1]) if suffixes else None


def _open_text(path: Path, mode: Literal["r", "w"]) -> IO[str]:
    if path.name.lower().endswith(".gz"):
        text_mode: Literal["rt", "wt"] = "rt" if mode == "r" else "wt"
        return gzip.open(path, text_mode, encoding="utf-8", newline="")
    return open(path, mode, encoding="utf-8", newline="")


def progress(items: Iterable[Any], desc: str, enabled: bool, **kwargs: Any) -> Iterable[Any]:
    """``items`` with a tqdm bar on stderr when ``enabled``."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, file=sys.stderr, dynamic_ncols=True, **kwargs)


def read_table(path: Path, show_progress: bool = False) -> Table:
    """Read a JSONL, CSV or JSON file (optionally gzipped) into a :class:`Table`."""
    fmt = table_format(path)
    if fmt is None:
        raise InputError(f"{path}: unknown file type; use .jsonl, .csv or .json (optionally .gz)")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a file")
    try:
        with _open_text(path, "r") as handle:
            if fmt == "jsonl":
                table = _read_jsonl(path, handle, show_progress)
            elif fmt == "csv":
                table = _read_csv(path, handle, show_progress)
            else:
                table = _read_json(path, handle)
    except InputError:
        raise
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read: {_one_line(exc)}") from None
    if not table.rows:
        raise InputError(f"{path}: no rows")
    return table


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _note_columns(columns: dict[str, None], row: dict[str, Any]) -> None:
    for key in row:
        columns.setdefault(key, None)


def _read_jsonl(path: Path, handle: IO[str], show_progress: bool) -> Table:
    rows: list[dict[str, Any]] = []
    columns: dict[str, None] = {}
    lines: Iterator[str] = iter(handle)
    for number, line in enumerate(
        progress(lines, f"reading {path.name}", show_progress, unit=" rows"), start=1
    ):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}: line {number}: expected a JSON object per line")
        rows.append(row)
        _note_columns(columns, row)
    return Table(rows, "jsonl", list(columns))


def _read_csv(path: Path, handle: IO[str], show_progress: bool) -> Table:
    reader = csv.DictReader(handle)
    if reader.fieldnames is None:
        raise InputError(f"{path}: empty CSV (no header row)")
    columns = list(reader.fieldnames)
    rows: list[dict[str, Any]] = []
    for row in progress(reader, f"reading {path.name}", show_progress, unit=" rows"):
        if None in row:  # more cells than header names
            raise InputError(
                f"{path}: line {reader.line_num}: more cells than the header has columns"
            )
        rows.append(dict(row))
    return Table(rows, "csv", columns)


def _read_json(path: Path, handle: IO[str]) -> Table:
    try:
        data = json.load(handle)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    columns: dict[str, None] = {}
    if isinstance(data, list):
        for index, row in enumerate(data):
            if not isinstance(row, dict):
                raise InputError(f"{path}: item {index} of the JSON list is not an object")
            _note_columns(columns, row)
        return Table(list(data), "json", list(columns), "records")
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise InputError(f"{path}: JSON columns differ in length: {sorted(lengths)}")
        keys = list(data)
        rows = [dict(zip(keys, values, strict=True)) for values in zip(*data.values(), strict=True)]
        return Table(rows, "json", keys, "columns")
    raise InputError(f"{path}: expected a JSON list of objects or an object of equal-length lists")


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False)


def write_table(
    path: Path, table: Table, fmt: Format | None = None, show_progress: bool = False
) -> None:
    """Write ``table`` to ``path`` in ``fmt`` (default: the table's own format).

    Floats are written with ``repr`` (they read back bit-identical); non-finite floats
    become JSON ``null`` / an empty CSV cell.
    """
    fmt = fmt or table.fmt
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: dict[str, None] = dict.fromkeys(table.columns)
    for row in table.rows:
        _note_columns(columns, row)
    names = list(columns)
    rows = progress(table.rows, f"writing {path.name}", show_progress, unit=" rows")
    try:
        with _open_text(path, "w") as handle:
            if fmt == "jsonl":
                for row in rows:
                    clean = {k: _json_value(v) for k, v in row.items()}
                    handle.write(json.dumps(clean, ensure_ascii=False) + "\n")
            elif fmt == "csv":
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(names)
                for row in rows:
                    writer.writerow([_csv_cell(row.get(name)) for name in names])
            elif table.shape == "columns":
                data = {name: [_json_value(r.get(name)) for r in table.rows] for name in names}
                json.dump(data, handle, ensure_ascii=False)
                handle.write("\n")
            else:
                rows = [{k: _json_value(v) for k, v in r.items()} for r in table.rows]
                json.dump(rows, handle, ensure_ascii=False)
                handle.write("\n")
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {_one_line(exc)}") from None


def decode_cell(value: Any) -> Any:
    """A CSV cell that holds JSON (a list, a number) as its value; other values unchanged."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return value
    return value


__all__ = [
    "Format",
    "InputError",
    "Table",
    "decode_cell",
    "progress",
    "read_table",
    "table_format",
    "write_table",
]
