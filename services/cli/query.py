"""``anon query``: find studies on the PACS (one query, or one per row of a spreadsheet).

Prints PHI (patient names and IDs): what the PACS shows anyone allowed to query it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.cli.remote import add_target_arguments

if TYPE_CHECKING:
    from shared.config import Settings

NAME = "query"
HELP = "find studies on the PACS (C-FIND), marking those already imported"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patient-name", default="", metavar="P", help="wildcards * and ?")
    parser.add_argument("--patient-id", default="", metavar="I", help="wildcards * and ?")
    parser.add_argument("--study-date", default="", metavar="D",
                        help="YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either end may be open)")
    parser.add_argument("--accession", default="", metavar="A", help="wildcards * and ?")
    parser.add_argument("--modality", default="", metavar="M", help="e.g. CT, MR, RTSTRUCT")
    parser.add_argument("--batch", type=Path, metavar="FILE",
                        help="a .csv or .xlsx with columns among PatientID, AccessionNumber, "
                             "StudyDate, Modality: one query per row")
    parser.add_argument("--output", type=Path, metavar="OUT",
                        help="with --batch: the results spreadsheet to write (.xlsx or .csv), "
                             "which `anon retrieve --batch` accepts")
    parser.add_argument("--json", action="store_true", help="as JSON")
    add_target_arguments(parser)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.remote import call, target_settings
    from shared.commands.protocol import QR_FETCHER

    settings = target_settings(args, settings)
    if args.batch is not None:
        return _batch(args, settings)
    if args.output is not None:
        print("anon query: --output goes with --batch", file=sys.stderr)
        return 2
    arguments = {"patient_name": args.patient_name, "patient_id": args.patient_id,
                 "study_date": args.study_date, "accession": args.accession,
                 "modality": args.modality}
    result = call(settings, QR_FETCHER, "query", arguments)
    if isinstance(result, int):
        return result
    studies: list[dict[str, Any]] = result["studies"]
    if args.json:
        print(json.dumps(studies, indent=2, ensure_ascii=False))
        return 0
    _print_studies(studies)
    return 0


def _print_studies(studies: list[dict[str, Any]]) -> None:
    if not studies:
        print("no study matches")
        return
    header = ("", "patient name", "patient ID", "date", "accession", "modalities", "series",
              "images", "study instance UID")
    rows = [("*" if s["already_imported"] else "", s["patient_name"], s["patient_id"],
             s["study_date"], s["accession"], "\\".join(s["modalities"]),
             "" if s["series_count"] is None else str(s["series_count"]),
             "" if s["instance_count"] is None else str(s["instance_count"]), s["study_uid"])
            for s in studies]
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    imported = sum(1 for s in studies if s["already_imported"])
    print(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}"
          + (f"; * = already imported ({imported})" if imported else ""))


def _batch(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import asdict

    from services.cli.remote import call
    from shared.commands.protocol import QR_FETCHER
    from shared.qr.requests import BatchResult, RequestError, read_batch, write_batch_results

    try:
        rows = read_batch(args.batch)
    except (RequestError, OSError) as exc:
        print(f"anon query: {exc}", file=sys.stderr)
        return 2
    result = call(settings, QR_FETCHER, "query-batch", {"rows": [asdict(r) for r in rows]})
    if isinstance(result, int):
        return result
    results = [BatchResult(**r) for r in result["results"]]
    if args.output is not None:
        write_batch_results(results, args.output)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2, ensure_ascii=False))
    else:
        counts: dict[str, int] = {}
        for r in results:
            counts[r.status] = counts.get(r.status, 0) + 1
        for r in results:
            if r.status != "found":
                print(f"row {r.row}: {r.status}" + (f" - {r.reason}" if r.reason else ""))
        print(f"{len(rows)} rows: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
              + (f"; results in {args.output}" if args.output else ""))
    return 0
