"""What the RT batch tells its operator: the report file, the tracking file, the summary
and the lines naming each set that is not simply done.

The report and the console lines name set folders, UIDs and problems, never a patient's
name or ID; the tracking file is the one place linking original and new patient IDs.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from shared.rt.batch_rules import output_folder
from shared.rt.checks import Problem

if TYPE_CHECKING:
    from shared.rt.batch import BatchSummary, SetResult

REPORT_NAME = "rt_batch_report.txt"
TRACKING_HEADER = ["original_patient_id", "new_patient_id", "original_plan_id", "hospital"]


def tracking_path(out: Path, day: date | None = None) -> Path:
    """The tracking file of ``day`` (today) in the output folder."""
    return out / f"tracking_{day or date.today():%Y%m%d}.csv"


def tracking_rows(processed: list[SetResult], hospital: str) -> list[list[str]]:
    """The tracking rows of a run's processed sets, in the file's column order."""
    return [[r.original_patient_id, r.new_id, r.plan_label, hospital] for r in processed]


def tracking_text(rows: Iterable[Sequence[str]]) -> str:
    """A tracking file's text: the header, then ``rows`` as they come (the PHI index
    serves its copy of a day's rows in this form too)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TRACKING_HEADER)
    writer.writerows(rows)
    return buffer.getvalue()


def write_tracking(
    out: Path, processed: list[SetResult], hospital: str, day: date | None = None
) -> Path:
    """Write ``tracking_YYYYMMDD.csv`` of ``day`` (today): the rows of this run, replacing
    rows of the same new IDs that an earlier run of the day wrote and keeping the others,
    sorted by new ID."""
    path = tracking_path(out, day)
    rows: dict[str, list[str]] = {}
    if path.exists():
        with path.open(newline="", encoding="utf-8") as handle:
            for row in list(csv.reader(handle))[1:]:
                if len(row) == len(TRACKING_HEADER):
                    rows[row[1]] = row
    for row in tracking_rows(processed, hospital):
        rows[row[1]] = row
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        handle.write(tracking_text(rows[key] for key in sorted(rows)))
    os.replace(temporary, path)
    return path


def problem_line(problem: Problem) -> str:
    """A problem as the report and the console word it."""
    return f"[{problem.code}] {problem.detail}"


def summary_lines(summary: BatchSummary) -> list[str]:
    """The counts of a run and where its files are: the end of the report and of what the
    command prints."""
    lines = [
        f"sets done:     {summary.done}",
        f"sets forced:   {summary.count('forced')}",
        f"sets skipped:  {summary.count('skipped')}",
        f"sets failed:   {summary.count('failed')}",
        f"objects:       {summary.objects}",
        f"seconds:       {summary.seconds:.2f}",
    ]
    if summary.report is not None:
        lines.append(f"report:        {summary.report}")
    if summary.tracking is not None:
        lines.append(f"tracking file: {summary.tracking}")
    return lines


def _what_is_wrong(result: SetResult) -> tuple[list[str], str]:
    """What made a set skipped, forced or failed, worded as in the report, and what those
    things are called. A failed set fails for its errors, the others for their problems."""
    if result.status == "failed":
        found = [f"error {e}" for e in result.errors]
        found += [f"output error {problem_line(p)}" for p in result.output_problems]
        return found, "error"
    return [problem_line(p) for p in result.problems], "problem"


def set_notice(result: SetResult) -> str:
    """One line naming a set that is not done: its status, folder (and output folder when
    processed), its first problem or error and how many there are."""
    line = f"{result.status} {result.folder.name}"
    if result.number:
        line += f" -> {output_folder(result.number)}"
    found, noun = _what_is_wrong(result)
    if found:
        line += f": {found[0]} ({len(found)} {noun}{'' if len(found) == 1 else 's'})"
    return line


def console_lines(summary: BatchSummary) -> list[str]:
    """What ``anon rt-batch`` prints: a line per set skipped, forced or failed, then the
    summary with the paths of the report and the tracking file."""
    notices = [set_notice(s) for s in summary.sets if s.status != "done"]
    return [*notices, *summary_lines(summary)]


def _set_lines(result: SetResult) -> list[str]:
    """The report's block of one set."""
    head = f"set {result.folder.name}: {result.status}"
    if result.number:
        head += (f" -> {output_folder(result.number)} ({result.new_id}), "
                 f"{result.written} objects written")
    lines = [head]
    if result.problems:
        verb = "problems (processed anyway)" if result.number else "problems"
        lines.append(f"  {verb}: {len(result.problems)}")
        lines += [f"    problem {problem_line(p)}" for p in result.problems]
    lines += [f"    error {e}" for e in result.errors]
    lines += [f"    output error {problem_line(p)}" for p in result.output_problems]
    lines += [f"    output still has {problem_line(p)}" for p in result.carried_problems]
    if result.number and not result.output_problems and not result.errors:
        lines.append("  output check: passed, every required reference resolves within "
                     "the output set" if not result.carried_problems else
                     "  output check: no problem beyond those of the input")
        if result.optional_dangling:
            lines.append(f"  note: {result.optional_dangling} optional references "
                         "(reference images of the plan) point outside the set, as in "
                         "the input")
    for scanned in result.files:
        if scanned.error:
            relative = Path(scanned.path).relative_to(result.folder)
            lines.append(f"  file {relative} {scanned.error}")
    return lines


def write_report(path: Path, summary: BatchSummary, *, force: bool) -> Path:
    """Write the report: per set its status, new ID and folder, every problem of the
    input, every error, what the output check found, and the files not used."""
    lines = [
        "anon rt-batch report",
        f"date: {date.today():%Y-%m-%d}",
        f"force: {'yes' if force else 'no'}",
        "",
    ]
    for result in summary.sets:
        lines += _set_lines(result)
    lines += ["", *summary_lines(summary)]
    # Through a new file and a rename: a link left where the report goes is replaced,
    # never written through.
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path
