"""The README's configuration table, generated from the settings object.

``python -m rewardcal.config_table --write README.md`` replaces the table between its
markers; the tests fail when the README's table is stale.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from pydantic_core import PydanticUndefined

from rewardcal.config import settings_fields

START = "<!-- config-table:start -->"
END = "<!-- config-table:end -->"


def _default(field: object) -> str:
    default = getattr(field, "default", None)
    factory = getattr(field, "default_factory", None)
    if default is PydanticUndefined and factory is not None:
        default = factory()
    if default is None:
        return "—"
    if isinstance(default, list):
        return ",".join(str(v) for v in default) or "(empty)"
    return str(default)


def render_table() -> str:
    lines = [
        "| environment variable | flag | default | what it trades off |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in settings_fields().items():
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| `REWARDCAL_{name.upper()}` | `--{name.replace('_', '-')}` | "
            f"`{_default(field)}` | {description} |"
        )
    return "\n".join(lines)


def replace_table(text: str) -> str:
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"markers {START} ... {END} not found")
    return pattern.sub(f"{START}\n{render_table()}\n{END}", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="replace the table in this file")
    args = parser.parse_args(argv)
    if args.write is None:
        print(render_table())
        return 0
    args.write.write_text(replace_table(args.write.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
