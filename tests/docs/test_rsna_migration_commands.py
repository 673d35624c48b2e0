"""The commands of docs/migrating-from-rsna.md, run as written on the workbook it shows.

The workbook is written into the workspace as the guide's table shows it (the RSNA
Anonymizer's Index tab saves such a file), then the guide's commands run in order against a
test database, and what they print is compared with what the guide says they print.
"""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest

from tests.docs.commands import ROOT, reader_env, run, workspace
from tests.docs.test_commands import RSNA_MIGRATION, RUN_ELSEWHERE

pytestmark = pytest.mark.integration

GUIDE = ROOT / "docs" / "migrating-from-rsna.md"
DRY_RUN = ".venv/bin/anon index import-rsna Index.xlsx --dry-run"
IMPORT = ".venv/bin/anon index import-rsna Index.xlsx"
LOOKUP = ".venv/bin/anon lookup 123456-000007"
COMMANDS = [DRY_RUN, IMPORT, LOOKUP]


def _block_after(heading: str, language: str = "text") -> str:
    """The first block of ``language`` after ``heading`` in the guide."""
    text = GUIDE.read_text(encoding="utf-8")
    after = text[text.index(heading):]
    start = after.index(f"```{language}\n") + len(f"```{language}\n")
    return after[start:after.index("```", start)]


def _workbook(path: Path) -> None:
    """The guide's table as a workbook: its rows split on two or more spaces, the header
    on the first line, empty cells shown as ``-``."""
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    for line in _block_after("## Saving the Anonymizer's index").splitlines():
        if line.strip():
            cells = [cell.strip() for cell in line.split("  ") if cell.strip()]
            sheet.append([None if cell == "-" else cell for cell in cells])
    workbook.save(path)


def test_every_command_of_the_guide_is_checked_here() -> None:
    assert sorted(COMMANDS) == sorted(c for c, where in RUN_ELSEWHERE.items()
                                      if where == RSNA_MIGRATION)


def test_the_rsna_migration_guide(database_url: str) -> None:
    with workspace() as ws:
        env = reader_env(DATABASE_URL=database_url)
        _workbook(ws / "Index.xlsx")
        dry = run(DRY_RUN, ws, env).stdout
        assert dry == _block_after("A dry run first")
        done = run(IMPORT, ws, env).stdout
        assert done == _block_after("then the import itself")
        again = run(IMPORT, ws, env).stdout
        assert "patients:    0 imported, 2 already present, 0 conflicts" in again
        found = run(LOOKUP, ws, env).stdout
        assert "original name:     ROE^RICHARD" in found
        assert "date offset:       2001 days" in found
