"""``anon lookup``: the original patient behind a pseudonymous patient ID (prints PHI).

Each lookup is recorded in the audit trail, in the transaction of the read, under the
operating-system user who ran it."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.config import Settings
    from shared.index.lookup import PatientIdentity

NAME = "lookup"
HELP = "print the original patient and studies of a pseudonymous patient ID (PHI)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pseudonym", metavar="PSEUDONYMOUS_ID",
                        help="a pseudonymous patient ID, e.g. 123456-000001")
    parser.add_argument("--data-dir", type=Path, help="an embedded system's data folder")
    parser.add_argument("--json", action="store_true", help="as JSON")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from services.cli.tokens import cli_actor
    from shared.index import audit
    from shared.index.connect import open_index
    from shared.index.lookup import read_patient

    async def find() -> PatientIdentity | None:
        opened = await open_index(args.data_dir or settings.data_dir, settings.database_url,
                                  max_connections=1)
        try:
            async with opened.pool.acquire() as connection, connection.transaction():
                found = await read_patient(connection, args.pseudonym)
                await audit.record(connection, actor=cli_actor(), client="local",
                                   action="patient.phi", target=args.pseudonym.strip()[:64],
                                   outcome=audit.OK if found else audit.NOT_FOUND)
                return found
        finally:
            await opened.close()

    found = asyncio.run(find())
    if found is None:
        print(f"anon lookup: no patient has the pseudonymous ID {args.pseudonym!r}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(found)))
        return 0
    print(f"pseudonymous ID:   {found.pseudo_patient_id}")
    print(f"original name:     {found.original_patient_name}")
    print(f"original ID:       {found.original_patient_id}"
          + (f" (issuer {found.original_issuer})" if found.original_issuer else ""))
    print(f"date offset:       {found.date_offset_days} days")
    for study in found.studies:
        print(f"study {study.pseudo_study_uid}")
        print(f"  date:            {study.pseudo_study_date or '-'}"
              f"  (original {study.original_study_date or '-'})")
        print(f"  accession:       {study.pseudo_accession or '-'}"
              f"  (original {study.original_accession or '-'})")
        print(f"  original UID:    {study.original_study_uid}")
    return 0
