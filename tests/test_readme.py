"""The README documents every setting and shows the commands CI runs."""

from __future__ import annotations

from pathlib import Path

from rewardcal.config_table import render_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_config_table_is_current() -> None:
    text = README.read_text()
    assert render_table() in text, (
        "README config table is stale: python -m rewardcal.config_table --write README.md"
    )


def test_first_section_is_the_two_commands_and_ci_runs_the_test_one() -> None:
    text = README.read_text()
    first_section = text.split("\n## ")[1]
    assert first_section.startswith("The two commands")
    assert "make serve" in first_section and "make test" in first_section
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci
