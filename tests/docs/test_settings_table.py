"""The settings table of docs/operations.md is what shared/config.py defines."""

from __future__ import annotations

from pathlib import Path

from shared.config import Settings, settings_markdown

ROOT = Path(__file__).resolve().parents[2]

START, END = "<!-- settings-table:start -->\n", "<!-- settings-table:end -->"


def test_operations_settings_table_is_generated_from_the_settings() -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    start = text.index(START) + len(START)
    end = text.index(END)
    assert text[start:end] == settings_markdown(), (
        "docs/operations.md settings table is stale: paste the output of "
        "`python -c 'from shared.config import settings_markdown; "
        "print(settings_markdown(), end=\"\")'` between its markers"
    )


def test_the_table_names_every_variable_with_a_meaning() -> None:
    table = settings_markdown()
    for name, field in Settings.model_fields.items():
        assert f"| `{name.upper()}` |" in table
        assert field.description, f"{name.upper()} has no description"
