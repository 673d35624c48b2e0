"""``anon rt-batch``: de-identify radiotherapy planning sets so plans can be shared.

ROOT holds one folder per set (CT images, RTSTRUCT, RTPLAN, RTDOSE, found recursively
under any name). Every set is read and checked with :func:`shared.rt.check_rt_set`; a set
with problems is reported and skipped unless ``--force``. Sets that are processed are
numbered in sorted folder order from ``--first-index`` and get the ID
``<prefix><number:03d>``, the name ``<family>^<given>``, dates shifted by the patient's
offset from the PHI index, a synthetic birth date that keeps the patient's age at the
shifted study date, keyed UIDs (so every link survives) and the rest of the RICORD profile.
The output objects are graphed and checked again. Work on files is spread over processes;
the processes never touch the index, so the result does not depend on their number.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import csv
import hashlib
import multiprocessing
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from multiprocessing.pool import Pool
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from shared.config import Settings
from shared.deid.context import Pseudonyms
from shared.deid.engine import Engine, identity
from shared.deid.profile import build_profile
from shared.deid.pseudonymizer import instance_record
from shared.deid.rules import KEEP, Replace, RuleSet
from shared.dicom.errors import RejectedObject
from shared.dicom.parse import DicomObject, parse
from shared.index.connect import OpenIndex, open_index
from shared.index.phi_index import InstanceRecord, Site, patient_key
from shared.rt import ObjectNode, Problem, ReferenceGraph, check_rt_set, node_of
from shared.storage.keys import UnsafePath, contained, safe_component, safe_name

PATIENT_BIRTH_DATE = 0x00100030
PATIENT_AGE = 0x00101010
STUDY_DATE = 0x00080020
ISSUER_OF_PATIENT_ID = 0x00100021
RT_PLAN_LABEL = 0x300A0002
TREATMENT_MACHINE_NAME = 0x300A00B2

OUTPUT_FOLDER = "ANON_{:03d}"
REPORT_NAME = "rt_batch_report.txt"
TRACKING_HEADER = ["original_patient_id", "new_patient_id", "original_plan_id", "hospital"]
CHUNK = 4
# Below this many files, starting worker processes costs more than it saves.
MIN_FILES_FOR_POOL = 48

_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
# <modality>_<SOP instance UID>.dcm, each part as made safe by shared.storage.keys.
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*_[A-Za-z0-9][A-Za-z0-9._-]*\.dcm$")

NAME = "rt-batch"
HELP = "de-identify RT planning sets (CT, RTSTRUCT, RTPLAN, RTDOSE)"

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchOptions:
    """What one run of the batch does (the command-line options, resolved)."""

    root: Path
    out: Path | None = None  # None: ROOT
    id_prefix: str = "ANON"
    family_name: str | None = None  # None: the new ID
    given_name: str = ""
    hospital: str = ""
    first_index: int = 1
    machine_name: str | None = None  # None: keep TreatmentMachineName
    jobs: int = 1
    data_dir: Path = Path("data")
    database_url: str | None = None
    site_id: str | None = None
    progress: bool = True
    force: bool = False

    @property
    def output(self) -> Path:
        """The folder receiving the set folders, the tracking file and the report."""
        return self.out if self.out is not None else self.root


@dataclass(frozen=True)
class Scanned:
    """One input file as read while checking its set: its node, or why it is not used,
    and the original values the batch needs (PHI: never written to the report)."""

    path: str
    error: str = ""
    node: ObjectNode | None = None
    issuer: str = ""
    study_date: str = ""
    age: str = ""
    birth_date: str = ""
    plan_label: str = ""


@dataclass(frozen=True)
class SetPlan:
    """What a worker needs to de-identify the objects of one set, the same in any process."""

    new_id: str
    patient_name: str
    date_offset_days: int
    birth_date: str
    machine_name: str | None
    site_id: str
    secret: bytes


@dataclass(frozen=True)
class Written:
    """One de-identified object: its output node and index record, or the error."""

    set_number: int
    position: int
    name: str = ""
    error: str = ""
    node: ObjectNode | None = None
    record: InstanceRecord | None = None
    # Original study UID, date and accession, then the new study UID and date.
    study: tuple[str, str, str, str, str] = ("", "", "", "", "")


@dataclass
class SetResult:
    """The outcome of one set folder: status (done, forced, skipped, failed), its number
    and new ID when processed, the input problems, the output problems that are errors,
    other errors and the files that are not DICOM."""

    folder: Path
    paths: list[Path] = field(default_factory=list)
    files: list[Scanned] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    status: str = "skipped"
    number: int = 0
    new_id: str = ""
    original_patient_id: str = ""
    plan_label: str = ""
    written: int = 0
    output_problems: list[Problem] = field(default_factory=list)
    optional_dangling: int = 0
    carried_problems: list[Problem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def objects(self) -> list[Scanned]:
        return [f for f in self.files if f.node is not None]


@dataclass
class BatchSummary:
    """Counts of a run and where its report and tracking file are."""

    sets: list[SetResult] = field(default_factory=list)
    seconds: float = 0.0
    report: Path | None = None
    tracking: Path | None = None

    def _count(self, status: str) -> int:
        return sum(1 for s in self.sets if s.status == status)

    @property
    def done(self) -> int:
        return self._count("done")

    @property
    def errors(self) -> int:
        return sum(len(s.errors) + len(s.output_problems) for s in self.sets)

    def lines(self) -> list[str]:
        """The summary printed at the end of a run."""
        objects = sum(s.written for s in self.sets)
        lines = [
            f"sets done:     {self.done}",
            f"sets forced:   {self._count('forced')}",
            f"sets skipped:  {self._count('skipped')}",
            f"sets failed:   {self._count('failed')}",
            f"objects:       {objects}",
            f"seconds:       {self.seconds:.2f}",
        ]
        if self.report is not None:
            lines.append(f"report:        {self.report}")
        if self.tracking is not None:
            lines.append(f"tracking file: {self.tracking}")
        return lines


# ---------------------------------------------------------------------------------------
# Finding and checking the sets
# ---------------------------------------------------------------------------------------


def find_sets(root: Path, out: Path) -> list[Path]:
    """The set folders of ROOT in sorted order: its sub-folders, except hidden ones, the
    output folder and, when the output goes into ROOT, the set folders written there."""
    root, out = root.resolve(), out.resolve()
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        resolved = folder.resolve()
        if folder.name.startswith(".") or resolved == out:
            continue
        if out == root and re.fullmatch(r"ANON_\d{3,}", folder.name):
            continue
        if out.is_relative_to(resolved):
            raise ValueError(f"--out must not be inside the set folder {folder.name}")
        found.append(folder)
    return found


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _scan(path_text: str) -> Scanned:
    """Read one file: its reference node and the original values the batch needs."""
    path = Path(path_text)
    try:
        obj = parse(path.read_bytes())
    except RejectedObject as exc:
        return Scanned(path_text, error=f"ignored, not DICOM: {exc.reason}")
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        return Scanned(path_text, error=f"ignored, unreadable: {reason}")
    get = obj.get_text
    return Scanned(
        path_text,
        node=node_of(obj),
        issuer=get(ISSUER_OF_PATIENT_ID) or "",
        study_date=get(STUDY_DATE) or "",
        age=get(PATIENT_AGE) or "",
        birth_date=get(PATIENT_BIRTH_DATE) or "",
        plan_label=get(RT_PLAN_LABEL) or "",
    )


def _scan_chunk(chunk: list[str]) -> list[Scanned]:
    return [_scan(p) for p in chunk]


def _principal(values: Iterable[str]) -> str:
    """The most frequent non-empty value ('' when none; the smallest on ties)."""
    counts = Counter(v for v in values if v)
    if not counts:
        return ""
    return min(counts, key=lambda v: (-counts[v], v))


# ---------------------------------------------------------------------------------------
# Synthetic birth date
# ---------------------------------------------------------------------------------------


def _read_date(value: str) -> date | None:
    match = _DATE.match(value.strip())
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def _minus(day: date, amount: int, unit: str) -> date | None:
    """``day`` moved back by ``amount`` days, weeks, months or years (a 29 February that
    does not exist becomes the 28th)."""
    try:
        if unit == "D":
            return day - timedelta(days=amount)
        if unit == "W":
            return day - timedelta(weeks=amount)
        months = day.year * 12 + day.month - 1 - amount * (12 if unit == "Y" else 1)
        year, month = divmod(months, 12)
        month += 1
        return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
    except (ValueError, OverflowError):
        return None


def _full_years(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def synthetic_birth_date(age: str, birth_date: str, study_date: str, offset_days: int) -> str:
    """A birth date giving the original age at the shifted study date: the age is
    PatientAge when it is readable, else the whole years between the original birth and
    study dates (days under one year). '' when the age or the study date is unknown."""
    study = _read_date(study_date)
    if study is None:
        return ""
    shifted = study - timedelta(days=offset_days)
    match = _AGE.match(age.strip())
    if match is not None:
        found = _minus(shifted, int(match[1]), match[2])
        return found.strftime("%Y%m%d") if found else ""
    birth = _read_date(birth_date)
    if birth is None or birth > study:
        return ""
    years = _full_years(birth, study)
    found = _minus(shifted, years, "Y") if years else shifted - (study - birth)
    return found.strftime("%Y%m%d") if found else ""


# ---------------------------------------------------------------------------------------
# De-identification (in worker processes: no index access, everything from the plan)
# ---------------------------------------------------------------------------------------


def batch_rules(birth_date: str, machine_name: str | None) -> RuleSet:
    """The default (RICORD) profile with the synthetic birth date and the treatment
    machine name kept (the profile would empty it; a planning system needs it to match a
    commissioned machine) or renamed; named and hashed as a rule set of its own."""
    rules = build_profile()
    rules.by_tag[PATIENT_BIRTH_DATE] = Replace(
        "P", "synthetic birth date keeping the age at the shifted study date",
        lambda ctx, element: birth_date,
    )
    extras = ["synthetic birth date"]
    rules.by_tag[TREATMENT_MACHINE_NAME] = KEEP
    if machine_name is not None:
        rules.by_tag[TREATMENT_MACHINE_NAME] = Replace(
            "P", f"renamed to {machine_name}", lambda ctx, element: machine_name
        )
        extras.append("treatment machine renamed")
    else:
        extras.append("treatment machine kept")
    rules.name = "rt-batch: " + rules.name.removeprefix("built-in: ") + "; " + "; ".join(extras)
    identity_text = f"{rules.sha256}\nrt-batch\nbirth-date:synthetic\nmachine:{machine_name}"
    rules.sha256 = hashlib.sha256(identity_text.encode("utf-8")).hexdigest()
    return rules


_engines: dict[tuple[bytes, str, str | None], Engine] = {}


def _engine(plan: SetPlan) -> Engine:
    key = (plan.secret, plan.birth_date, plan.machine_name)
    found = _engines.get(key)
    if found is None:
        found = Engine(batch_rules(plan.birth_date, plan.machine_name), plan.secret)
        _engines[key] = found
    return found


def _write(path: Path, data: bytes) -> None:
    """Write through a temporary file and a rename; an identical file is left alone."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)  # a link left there is removed, never written through
    temporary.write_bytes(data)
    os.replace(temporary, path)


Task = tuple[int, int, str, str, SetPlan]


def output_name(modality: str, sop_instance_uid: str) -> str:
    """The file name of one output object: ``<modality>_<SOP instance UID>.dcm``, each part
    kept only when safe in a file name (else its digest name, see shared.storage.keys)."""
    return f"{safe_component(modality or 'OT')}_{safe_name(sop_instance_uid, '.dcm')}"


def _deidentify(task: Task) -> Written:
    """De-identify one object of a set into its output folder."""
    set_number, position, source, folder, plan = task
    try:
        obj: DicomObject = parse(Path(source).read_bytes())
        ident = identity(obj)
        site = Site(plan.site_id, plan.secret)
        pseudonyms = Pseudonyms(
            patient_id=plan.new_id,
            patient_name=plan.patient_name,
            date_offset_days=plan.date_offset_days,
            accession_number=site.accession_pseudonym(
                ident.study_instance_uid, ident.accession_number.strip()
            ),
        )
        engine = _engine(plan)
        result = engine.deidentify(obj, pseudonyms)
        name = output_name(result.modality, result.sop_instance_uid)
        _write(contained(Path(folder), name, "output file"), result.data)
        node = node_of(parse(result.data))
    except RejectedObject as exc:
        return Written(set_number, position, error=f"{Path(source).name}: {exc.reason}")
    except OSError as exc:
        return Written(set_number, position,
                       error=f"{Path(source).name}: {exc.strerror or exc.__class__.__name__}")
    except Exception as exc:
        # One odd object must not stop the batch; the message could quote its values.
        return Written(set_number, position,
                       error=f"{Path(source).name}: unexpected {exc.__class__.__name__}")
    record = instance_record(ident, result, engine.rules)
    study = (ident.study_instance_uid, ident.study_date, ident.accession_number,
             result.study_instance_uid, result.study_date)
    return Written(set_number, position, name, node=node, record=record, study=study)


def _deidentify_chunk(chunk: list[Task]) -> list[Written]:
    return [_deidentify(task) for task in chunk]


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


def _map(
    pool: Pool | None,
    function: Callable[[list[T]], list[R]],
    items: Sequence[T],
    sizes: Sequence[int],
    bar: tqdm,
) -> list[R]:
    """``function`` over chunks of ``items``, in the pool when there is one; the largest
    items go first so that the processes finish together. Results are in item order."""
    order = sorted(range(len(items)), key=lambda i: -sizes[i])
    chunks = [order[start : start + CHUNK] for start in range(0, len(order), CHUNK)]
    work = ([items[i] for i in chunk] for chunk in chunks)
    found = pool.imap(function, work) if pool is not None else map(function, work)
    results: dict[int, R] = {}
    for chunk, chunk_results in zip(chunks, found, strict=True):
        results.update(zip(chunk, chunk_results, strict=True))
        bar.update(len(chunk_results))
    return [results[i] for i in range(len(items))]


def _check(result: SetResult) -> None:
    nodes = [f.node for f in result.objects if f.node is not None]
    result.problems = check_rt_set(ReferenceGraph.from_nodes(nodes))


def _number_sets(results: list[SetResult], options: BatchOptions) -> list[SetResult]:
    """Number the sets that will be processed, in sorted order, and set their IDs."""
    processed = [r for r in results if r.objects and (not r.problems or options.force)]
    for k, result in enumerate(processed):
        result.status = "forced" if result.problems else "done"
        result.number = options.first_index + k
        result.new_id = f"{options.id_prefix}{result.number:03d}"
        nodes = [f.node for f in result.objects if f.node is not None]
        result.original_patient_id = _principal(n.patient_id for n in nodes)
        result.plan_label = ";".join(
            sorted(f.plan_label for f in result.objects
                   if f.node is not None and f.node.modality == "RTPLAN")
        )
    return processed


async def _plans(
    opened: OpenIndex, processed: list[SetResult], options: BatchOptions
) -> dict[int, SetPlan]:
    """The plan of each processed set: its patient's date offset from the index (patients
    are looked up in set order, in this process only) and its synthetic birth date."""
    plans: dict[int, SetPlan] = {}
    for result in processed:
        objects = [f for f in result.objects if f.node is not None]
        principal = [f for f in objects
                     if f.node is not None and f.node.patient_id == result.original_patient_id]
        first = principal[0] if principal else objects[0]
        assert first.node is not None
        key = patient_key(first.node.patient_id, first.issuer, first.node.study_uid)
        patient = await opened.index.patient(key, first.node.patient_name)
        study_date = _principal(f.study_date for f in principal or objects)
        birth = synthetic_birth_date(
            _principal(f.age for f in principal or objects),
            _principal(f.birth_date for f in principal or objects),
            study_date,
            patient.date_offset_days,
        )
        family = options.family_name if options.family_name is not None else result.new_id
        name = f"{family}^{options.given_name}" if options.given_name else family
        plans[result.number] = SetPlan(
            new_id=result.new_id,
            patient_name=name,
            date_offset_days=patient.date_offset_days,
            birth_date=birth,
            machine_name=options.machine_name,
            site_id=opened.site.site_id,
            secret=opened.site.secret,
        )
    return plans


def _verify(result: SetResult, written: list[Written]) -> None:
    """Check the output set; problems the input did not have are errors, the others (of a
    forced set) are noted as carried over."""
    for item in written:
        if item.error:
            result.errors.append(f"not written: {item.error}")
    nodes = [w.node for w in written if w.node is not None]
    result.written = len(nodes)
    graph = ReferenceGraph.from_nodes(nodes)
    found = check_rt_set(graph)
    result.optional_dangling = len(graph.dangling())
    allowed = Counter((p.code, p.modality) for p in result.problems)
    for problem in found:
        key = (problem.code, problem.modality)
        if allowed[key] > 0:
            allowed[key] -= 1
            result.carried_problems.append(problem)
        else:
            result.output_problems.append(problem)
    if result.errors or result.output_problems:
        result.status = "failed"


async def _record(opened: OpenIndex, result: SetResult, written: list[Written]) -> None:
    """Record the set's studies and every written instance in the PHI index."""
    objects = [f for f in result.objects if f.node is not None]
    first = next((f for f in objects if f.node is not None
                  and f.node.patient_id == result.original_patient_id), objects[0])
    assert first.node is not None
    key = patient_key(first.node.patient_id, first.issuer, first.node.study_uid)
    patient = await opened.index.patient(key, first.node.patient_name)
    seen: set[str] = set()
    for item in written:
        original_uid, original_date, accession, new_uid, new_date = item.study
        if item.record is None or original_uid in seen:
            continue
        seen.add(original_uid)
        await opened.index.study(patient, original_study_uid=original_uid,
                                 pseudo_study_uid=new_uid, original_study_date=original_date,
                                 pseudo_study_date=new_date, original_accession=accession)
    await opened.index.record_instances([w.record for w in written if w.record is not None])


def _remove_stale(folder: Path, names: set[str]) -> None:
    """Remove objects a previous run wrote into a set folder that this run did not."""
    for path in folder.iterdir():
        if path.is_file() and _OUTPUT_NAME.match(path.name) and path.name not in names:
            path.unlink()


def _pool(options: BatchOptions, files: int) -> Pool | None:
    if options.jobs <= 1 or files < MIN_FILES_FOR_POOL:
        return None
    # Forking is cheap and safe here: no event loop, connection or thread exists yet.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(min(options.jobs, files // CHUNK + 1))


async def _run(options: BatchOptions, pool: Pool | None, results: list[SetResult]) -> None:
    opened = await open_index(options.data_dir, options.database_url, options.site_id,
                              max_connections=1)
    try:
        paths = [str(p) for r in results for p in r.paths]
        sizes = [_size(p) for r in results for p in r.paths]
        with tqdm(total=len(paths), unit="file", desc="checking",
                  disable=not options.progress) as bar:
            scanned = iter(_map(pool, _scan_chunk, paths, sizes, bar))
        for result in results:
            result.files = [next(scanned) for _ in result.paths]
            _check(result)
        processed = _number_sets(results, options)
        plans = await _plans(opened, processed, options)
        tasks: list[Task] = []
        task_sizes: list[int] = []
        folders: dict[int, Path] = {}
        for result in processed:
            try:
                folder = contained(options.output, OUTPUT_FOLDER.format(result.number),
                                   "set folder")
            except UnsafePath as exc:
                result.errors.append(f"not written: {exc.reason}")
                result.status = "failed"
                continue
            folders[result.number] = folder
            folder.mkdir(parents=True, exist_ok=True)
            tasks += [(result.number, k, f.path, str(folder), plans[result.number])
                      for k, f in enumerate(result.objects)]
            task_sizes += [_size(Path(f.path)) for f in result.objects]
        with tqdm(total=len(tasks), unit="file", desc="de-identifying",
                  disable=not options.progress) as bar:
            done = _map(pool, _deidentify_chunk, tasks, task_sizes, bar)
        by_set: dict[int, list[Written]] = {}
        for item in done:
            by_set.setdefault(item.set_number, []).append(item)
        for result in processed:
            if result.number not in folders:
                continue
            written = sorted(by_set.get(result.number, []), key=lambda w: w.position)
            _verify(result, written)
            _remove_stale(folders[result.number], {w.name for w in written if w.name})
            await _record(opened, result, written)
    finally:
        await opened.close()


def run_batch(options: BatchOptions) -> BatchSummary:
    """Check, de-identify and verify every set of ``options.root``; write the tracking
    file and the report into the output folder and return the summary."""
    started = time.perf_counter()
    out = options.output
    out.mkdir(parents=True, exist_ok=True)
    results = [SetResult(folder, _files(folder)) for folder in find_sets(options.root, out)]
    total = sum(len(r.paths) for r in results)
    pool = _pool(options, total)
    try:
        asyncio.run(_run(options, pool, results))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    summary = BatchSummary(results)
    summary.tracking = write_tracking(out, [r for r in results if r.number], options.hospital)
    summary.seconds = time.perf_counter() - started
    summary.report = write_report(out / REPORT_NAME, summary, options)
    return summary


# ---------------------------------------------------------------------------------------
# Tracking file and report
# ---------------------------------------------------------------------------------------


def write_tracking(out: Path, processed: list[SetResult], hospital: str) -> Path:
    """Write ``tracking_YYYYMMDD.csv``: the rows of this run, replacing rows of the same new
    IDs that an earlier run of the day wrote and keeping the others, sorted by new ID."""
    path = out / f"tracking_{date.today():%Y%m%d}.csv"
    rows: dict[str, list[str]] = {}
    if path.exists():
        with path.open(newline="", encoding="utf-8") as handle:
            for row in list(csv.reader(handle))[1:]:
                if len(row) == len(TRACKING_HEADER):
                    rows[row[1]] = row
    for result in processed:
        rows[result.new_id] = [result.original_patient_id, result.new_id, result.plan_label,
                               hospital]
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(TRACKING_HEADER)
        writer.writerows(rows[key] for key in sorted(rows))
    os.replace(temporary, path)
    return path


def _problem_line(problem: Problem) -> str:
    return f"[{problem.code}] {problem.detail}"


def write_report(path: Path, summary: BatchSummary, options: BatchOptions) -> Path:
    """Write the report: per set its status, new ID and folder, every problem of the
    input, every error, what the output check found, and the files not used."""
    lines = [
        "anon rt-batch report",
        f"date: {date.today():%Y-%m-%d}",
        f"force: {'yes' if options.force else 'no'}",
        "",
    ]
    for result in summary.sets:
        head = f"set {result.folder.name}: {result.status}"
        if result.number:
            head += (f" -> {OUTPUT_FOLDER.format(result.number)} ({result.new_id}), "
                     f"{result.written} objects written")
        lines.append(head)
        if result.problems:
            verb = "problems (processed anyway)" if result.number else "problems"
            lines.append(f"  {verb}: {len(result.problems)}")
            lines += [f"    problem {_problem_line(p)}" for p in result.problems]
        lines += [f"    error {e}" for e in result.errors]
        lines += [f"    output error {_problem_line(p)}" for p in result.output_problems]
        lines += [f"    output still has {_problem_line(p)}" for p in result.carried_problems]
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
    lines += ["", *summary.lines()]
    # Through a new file and a rename: a link left where the report goes is replaced,
    # never written through.
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


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
        site_id=settings.site_id, progress=not args.no_progress, force=args.force,
    )
    try:
        summary = run_batch(options)
    except ValueError as exc:
        print(f"anon rt-batch: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    clean = all(s.status == "done" for s in summary.sets) and bool(summary.sets)
    return 0 if clean else 1

