"""``anon retrieve``: bring studies from the PACS into the pipeline, verified complete."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.cli.remote import add_follow_arguments, add_target_arguments

if TYPE_CHECKING:
    from shared.config import Settings

NAME = "retrieve"
HELP = "retrieve studies from the PACS (C-MOVE or C-GET) and verify every instance arrived"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study_uids", nargs="*", metavar="STUDY_UID",
                        help="study instance UIDs (as `anon query` lists them)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--accessions", type=Path, metavar="FILE",
                       help="an accession list: one accession number per line, or SI:<study "
                            "UID>; blank lines and text after // are ignored; - reads stdin")
    group.add_argument("--batch", type=Path, metavar="FILE",
                       help="a .csv or .xlsx of requests (PatientID, AccessionNumber, "
                            "StudyDate, Modality) or the results of `anon query --batch`")
    add_follow_arguments(parser, "every study is complete and verified")
    add_target_arguments(parser)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.remote import call, follow, target_settings
    from shared.commands.protocol import QR_FETCHER

    settings = target_settings(args, settings)
    arguments = _arguments(args)
    if isinstance(arguments, int):
        return arguments
    result = call(settings, QR_FETCHER, "retrieve", arguments)
    if isinstance(result, int):
        return result
    job = int(result["job"])
    for line in result.get("lines", []):
        if line["status"] == "duplicate":
            print(f"line {line['line']}: same key as line {line['duplicate_of']}, "
                  "retrieved once")
    print(f"job {job}: {result['items']} stud{'y' if result['items'] == 1 else 'ies'} "
          f"or keys to retrieve; follow with `anon jobs {job}`")
    if not args.wait:
        return 0
    return follow(settings, job, show_progress=not args.no_progress and sys.stderr.isatty())


def _arguments(args: argparse.Namespace) -> dict[str, Any] | int:
    given = sum(bool(x) for x in (args.study_uids, args.accessions, args.batch))
    if given != 1:
        print("anon retrieve: give study UIDs, --accessions FILE or --batch FILE (one of them)",
              file=sys.stderr)
        return 2
    if args.accessions is not None:
        try:
            text = (sys.stdin.read() if str(args.accessions) == "-"
                    else args.accessions.read_text(encoding="utf-8-sig", errors="replace"))
        except OSError as exc:
            print(f"anon retrieve: cannot read {args.accessions}: {exc.strerror}",
                  file=sys.stderr)
            return 2
        return {"accessions": text}
    if args.batch is not None:
        from dataclasses import asdict

        from shared.qr.requests import RequestError, read_batch

        try:
            rows = read_batch(args.batch)
        except (RequestError, OSError) as exc:
            print(f"anon retrieve: {exc}", file=sys.stderr)
            return 2
        return {"rows": [asdict(r) for r in rows]}
    return {"study_uids": list(args.study_uids)}
