"""``anon deidentify``: its arguments, the library call, what it prints."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from services.cli.options import add_profile_arguments, profile_options
from shared.batch.files import DEFAULT_EXTENSIONS, ExtensionFilter, collect

if TYPE_CHECKING:
    from shared.batch.deidentify import Summary
    from shared.config import Settings

NAME = "deidentify"
HELP = "de-identify files and folders"


def add_arguments(deid: argparse.ArgumentParser) -> None:
    deid.add_argument("sources", nargs="+", type=Path, metavar="SRC")
    deid.add_argument("--out", required=True, type=Path, help="output folder")
    deid.add_argument("--data-dir", type=Path, help="embedded index, quarantine (default ./data)")
    deid.add_argument("--recursive", "-r", action="store_true", help="descend into folders")
    deid.add_argument(
        "--extensions", default=DEFAULT_EXTENSIONS,
        help="comma-separated suffixes; '*' for all; [dcm] = names of digits and periods",
    )
    deid.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1,
                      help="processes (default: every core)")
    deid.add_argument("--quarantine", type=Path,
                      help="rejected files and their report (default DATA_DIR/quarantine/<time>)")
    deid.add_argument("--no-progress", action="store_true", help="no progress bar")
    scripts = deid.add_argument_group(
        "script", "a CTP DicomAnonymizer script instead of the built-in profile"
    )
    scripts.add_argument("--script", type=Path, metavar="FILE",
                         help="CTP anonymizer script (XML or properties form)")
    scripts.add_argument("--script-dialect", choices=("auto", "ctp", "rsna"), default="auto",
                         help="rules for the script (auto: rsna if it uses @uid, @ptid, "
                         "@acc or @hashdate without parentheses)")
    scripts.add_argument("--lookup-table", type=Path, metavar="FILE",
                         help="lookup table for @lookup (KeyType/value=replacement lines)")
    accept = deid.add_argument_group(
        "filter", "which objects are accepted (as in the RSNA Anonymizer's Filter tab)"
    )
    accept.add_argument("--filter", type=Path, metavar="FILE",
                        help="CTP DicomFilter script; objects it does not match are refused")
    accept.add_argument("--accept-structured-reports", action="store_true",
                        help="do not refuse Structured Reports (refused by default)")
    accept.add_argument("--accept-secondary-captures", action="store_true",
                        help="do not refuse Secondary Captures (ImageType contains SECONDARY)")
    accept.add_argument("--accept-burned-in-annotation", action="store_true",
                        help="de-identify objects marked Burned In Annotation or Recognizable "
                        "Visual Features YES (their pixels are not cleaned; quarantined by "
                        "default); each is recorded as accepted in the index")
    add_profile_arguments(deid)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from services.cli.progress import BarProgress
    from shared.batch.deidentify import deidentify_files
    from shared.deid.configured import check_script, load_filter

    data_dir = args.data_dir or settings.data_dir
    try:
        accept = ExtensionFilter(args.extensions)
        files = collect(args.sources, accept, args.recursive)
        options = profile_options(args)
        object_filter = load_filter(
            args.filter,
            reject_structured_reports=not args.accept_structured_reports,
            reject_secondary_captures=not args.accept_secondary_captures,
            reject_identifying_pixels=not args.accept_burned_in_annotation,
        )
        check_script(args.script, args.script_dialect, args.lookup_table)
    except (ValueError, OSError) as exc:
        print(f"anon deidentify: {exc}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    if any(out.is_relative_to(s.resolve()) for s in args.sources if s.is_dir()):
        print("anon deidentify: --out must not be inside an input folder", file=sys.stderr)
        return 2
    if not files:
        print("anon deidentify: no input files match", file=sys.stderr)
        return 1
    quarantine = args.quarantine or data_dir / "quarantine" / time.strftime("%Y%m%d-%H%M%S")
    with BarProgress(enabled=not args.no_progress) as progress:
        summary = deidentify_files(
            files, args.out, quarantine, options, data_dir,
            database_url=settings.database_url, site_id=settings.site_id,
            jobs=max(1, args.jobs), progress=progress, object_filter=object_filter,
            script=args.script, script_dialect=args.script_dialect,
            lookup_table=args.lookup_table,
        )
    print("\n".join(summary_lines(summary)))
    return 0


SHOWN_REJECTIONS = 5


def summary_lines(summary: Summary) -> list[str]:
    """The counts, the first few refused files with their reasons, the report's path."""
    lines = [
        f"accepted:  {summary.accepted}",
        f"rejected:  {summary.rejected}",
        f"patients:  {len(summary.patients)}",
        f"studies:   {len(summary.studies)}",
        f"seconds:   {summary.seconds:.2f}",
        f"files/s:   {summary.files_per_second:.1f}",
    ]
    # Paths are the user's own input; reasons name the problem, never an element value.
    lines += [f"  {r.source}: {r.reason or r.code}"
              for r in summary.rejections[:SHOWN_REJECTIONS]]
    if summary.rejected > SHOWN_REJECTIONS:
        lines.append(f"  ... and {summary.rejected - SHOWN_REJECTIONS} more")
    if summary.report is not None:
        lines.append(f"rejected files and reasons: {summary.report}")
    return lines
