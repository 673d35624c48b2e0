"""``anon index``: work on the PHI index as a whole; ``anon index import-rsna`` moves a site
from the RSNA Anonymizer by importing the workbook its Index tab saves.

The summary counts patients and studies and names rows; it never prints a value of the
workbook, which is PHI (see ``shared.index.rsna_import``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.index.rsna_import import ImportSummary

NAME = "index"
HELP = "the PHI index as a whole: import the RSNA Anonymizer's index workbook"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="index_action", required=True)
    rsna = actions.add_parser(
        "import-rsna", help="import the index workbook the RSNA Anonymizer's Index tab saves "
        "(patients' pseudonyms and date offsets, studies' UIDs and accession numbers)")
    rsna.add_argument("workbook", type=Path, metavar="Index.xlsx",
                      help="the workbook the Index tab's Save button wrote")
    rsna.add_argument("--data-dir", type=Path, help="an embedded system's data folder")
    rsna.add_argument("--dry-run", action="store_true",
                      help="check the workbook against the index and say what would be "
                           "imported, changing nothing")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from shared.index.database import create_pool, resolve_url
    from shared.index.migrations import migrate
    from shared.index.rsna_import import RsnaImportError, import_rsna

    async def imported() -> ImportSummary:
        url = resolve_url(args.data_dir or settings.data_dir, settings.database_url)
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            async with pool.acquire() as connection:
                await migrate(connection)
            return await import_rsna(pool, args.workbook, dry_run=args.dry_run,
                                     configured_site_id=settings.site_id)
        finally:
            await pool.close()

    try:
        summary = asyncio.run(imported())
    except RsnaImportError as exc:
        print(f"anon index import-rsna: refused, nothing was imported: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"anon index import-rsna: cannot read the workbook: "
              f"{exc.strerror or exc.__class__.__name__}", file=sys.stderr)
        return 1
    _print(summary)
    return 1 if summary.conflicts else 0


def _print(summary: ImportSummary) -> None:
    sheets = ", ".join(repr(name) for name in summary.sheets)
    print(f"workbook:    {summary.rows} rows in {sheets}: {summary.patients} patients, "
          f"{summary.studies} studies")
    created = "would be created" if summary.dry_run else "created"
    print(f"SITEID:      {summary.site_id}"
          + (f" (the index had no site: {created} with it)" if summary.site_created else ""))
    shown = (f"shown by {summary.convention_rows} rows" if summary.convention_rows
             else "no row shows it, read as this system writes it")
    print(f"DateOffset:  {summary.convention} ({shown})")
    if summary.other_dated_rows:
        print(f"             {summary.other_dated_rows} rows have study dates that differ by "
              "neither: imported as written")
    print(f"patients:    {summary.patients_imported} imported, {summary.patients_present} "
          f"already present, {summary.patient_conflicts} conflicts")
    print(f"studies:     {summary.studies_imported} imported, {summary.studies_present} "
          f"already present, {summary.study_conflicts} conflicts")
    for line in summary.conflicts:
        print(f"conflict:    {line}")
    if summary.conflicts:
        print("nothing was imported: the index holds these patients or studies otherwise")
    elif summary.dry_run:
        print("dry run:     nothing was changed")
    else:
        print(f"next new patient: {summary.next_patient}")
