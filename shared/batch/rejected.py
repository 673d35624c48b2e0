"""The quarantine folder of a batch run: copies of the refused inputs and ``rejected.csv``.

The copies may hold PHI (they are the originals); the report holds each input's path as
it was given, the name of its copy, the reason code and the reason. Reasons come from
:class:`shared.dicom.errors.RejectedObject` and its kin, whose messages never repeat an
element value.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPORT_NAME = "rejected.csv"
REPORT_COLUMNS = ("source", "quarantined_as", "reason_code", "reason")


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused input: its position in the run, its path as given, code and reason."""

    index: int
    source: str
    code: str
    reason: str


def write_quarantine(rejections: Iterable[Rejection], folder: Path) -> Path:
    """Copy each refused input into ``folder`` (prefixed with its position, so equal names
    do not collide) and list them in ``folder/rejected.csv``; returns the report's path.
    An input that cannot be copied is listed with an empty copy name."""
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / REPORT_NAME
    with report.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(REPORT_COLUMNS)
        for rejection in rejections:
            copy_name = f"{rejection.index:06d}_{Path(rejection.source).name}"
            try:
                shutil.copyfile(rejection.source, folder / copy_name)
            except OSError:
                copy_name = ""
            writer.writerow([rejection.source, copy_name, rejection.code, rejection.reason])
    return report
