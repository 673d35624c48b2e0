"""``anon rt-batch``: de-identify radiotherapy planning sets so plans can be shared.

The arguments and what the command prints; the work is :func:`shared.rt.batch.run_batch`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.config import Settings

NAME = "rt-batch"
HELP = "de-identify RT planning sets (CT, RTSTRUCT, RTPLAN, RTDOSE)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``anon rt-batch``."""
    parser.add_argument("root", type=Path, metavar="ROOT",
                        help="folder holding one sub-folder per RT set")
    parser.add_argument("--id-prefix", default="ANON",
                        help="new patient IDs are PREFIX001, PREFIX002... (default ANON)")
    parser.add_argument("--family-name", help="family name of every set (default: the new ID)")
    parser.add_argument("--given-name", default="", help="given name (default empty)")
    parser.add_argument("--hospital", default="", help="hospital, written to the tracking file")
    parser.add_argument("--first-index", type=int, default=1,
                        help="number of the first processed set (default 1)")
    parser.add_argument("--out", type=Path, help="output folder (default ROOT)")
    parser.add_argument("--machine-name",
                        help="rename TreatmentMachineName in the plans (default: keep)")
    parser.add_argument("--force", action="store_true",
                        help="process sets that fail the check, problems in the report")
    parser.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1,
                        help="processes (default: every core)")
    parser.add_argument("--data-dir", type=Path,
                        help="embedded PHI index (default ./data; DATABASE_URL selects another)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``anon rt-batch``: 0 when every set is done, 1 when a set was skipped, forced
    or failed, 2 for unusable options."""
    from services.cli.progress import BarProgress
    from shared.rt.batch import BatchOptions, run_batch
    from shared.rt.report import console_lines

    if not args.root.is_dir():
        print(f"anon rt-batch: {args.root} is not a folder", file=sys.stderr)
        return 2
    if args.first_index < 0 or not args.id_prefix:
        print("anon rt-batch: --first-index must be >= 0 and --id-prefix not empty",
              file=sys.stderr)
        return 2
    options = BatchOptions(
        root=args.root, out=args.out, id_prefix=args.id_prefix, family_name=args.family_name,
        given_name=args.given_name, hospital=args.hospital, first_index=args.first_index,
        machine_name=args.machine_name, jobs=max(1, args.jobs),
        data_dir=args.data_dir or settings.data_dir, database_url=settings.database_url,
        site_id=settings.site_id, force=args.force,
    )
    try:
        with BarProgress(enabled=not args.no_progress) as progress:
            summary = run_batch(options, progress)
    except ValueError as exc:
        print(f"anon rt-batch: {exc}", file=sys.stderr)
        return 2
    print("\n".join(console_lines(summary)))
    return 0 if summary.clean else 1
