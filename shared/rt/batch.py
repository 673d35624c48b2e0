"""De-identify radiotherapy planning sets so plans can be shared (``anon rt-batch``).

ROOT holds one folder per set (CT images, RTSTRUCT, RTPLAN, RTDOSE, found recursively
under any name). Every set is read and checked with :func:`shared.rt.check_rt_set`; a set
with problems is reported and skipped unless forced. Sets that are processed are numbered
in sorted folder order from the first index and get the ID ``<prefix><number:03d>``, the
name ``<family>^<given>``, dates shifted by the patient's offset from the PHI index, a
synthetic birth date that keeps the patient's age at the shifted study date, keyed UIDs
(so every link survives) and the rest of the RICORD profile (:mod:`shared.rt.batch_rules`).
The output objects are graphed and checked again. Work on files is spread over processes
(:mod:`shared.rt.batch_work`); the processes never touch the index, so the result does not
depend on their number. :func:`run_batch` does it all and writes the tracking file and the
report (:mod:`shared.rt.report`); the tracking rows are recorded in the index too
(:mod:`shared.index.rt_tracking`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from multiprocessing.pool import Pool
from pathlib import Path

from shared.batch.pool import map_chunks, start_pool
from shared.batch.progress import NoProgress, Progress
from shared.index.connect import OpenIndex, open_index
from shared.index.phi_index import PatientRecord, patient_key
from shared.index.rt_tracking import record_tracking
from shared.rt.batch_rules import (
    OUTPUT_FOLDER_NAME,
    OUTPUT_NAME,
    output_folder,
    synthetic_birth_date,
)
from shared.rt.batch_work import (
    Scanned,
    SetPlan,
    Task,
    Written,
    deidentify_chunk,
    scan_chunk,
)
from shared.rt.checks import Problem, check_rt_set
from shared.rt.graph import ReferenceGraph
from shared.rt.report import REPORT_NAME, tracking_rows, write_report, write_tracking
from shared.storage.keys import UnsafePath, contained

CHUNK = 4
# Below this many files, starting worker processes costs more than it saves.
MIN_FILES_FOR_POOL = 48


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
    force: bool = False

    @property
    def output(self) -> Path:
        """The folder receiving the set folders, the tracking file and the report."""
        return self.out if self.out is not None else self.root


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
    """The sets of a run, how long it took and where its report and tracking file are."""

    sets: list[SetResult] = field(default_factory=list)
    seconds: float = 0.0
    report: Path | None = None
    tracking: Path | None = None

    def count(self, status: str) -> int:
        return sum(1 for s in self.sets if s.status == status)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def objects(self) -> int:
        return sum(s.written for s in self.sets)

    @property
    def errors(self) -> int:
        return sum(len(s.errors) + len(s.output_problems) for s in self.sets)

    @property
    def clean(self) -> bool:
        """Whether there were sets and every one is done."""
        return bool(self.sets) and all(s.status == "done" for s in self.sets)


# ---------------------------------------------------------------------------------------
# Finding, reading and checking the sets
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
        if out == root and OUTPUT_FOLDER_NAME.fullmatch(folder.name):
            continue
        if out.is_relative_to(resolved):
            raise ValueError(f"--out must not be inside the set folder {folder.name}")
        found.append(folder)
    return found


def set_files(folder: Path) -> list[Path]:
    """Every file under a set folder, in sorted order."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _principal(values: Iterable[str]) -> str:
    """The most frequent non-empty value ('' when none; the smallest on ties)."""
    counts = Counter(v for v in values if v)
    if not counts:
        return ""
    return min(counts, key=lambda v: (-counts[v], v))


def check_set(result: SetResult) -> None:
    """The problems of a set as read."""
    nodes = [f.node for f in result.objects if f.node is not None]
    result.problems = check_rt_set(ReferenceGraph.from_nodes(nodes))


def number_sets(results: list[SetResult], options: BatchOptions) -> list[SetResult]:
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


# ---------------------------------------------------------------------------------------
# Planning, checking the output and recording a set (in this process, with the index)
# ---------------------------------------------------------------------------------------


def _principal_objects(result: SetResult) -> list[Scanned]:
    """The objects of the set's principal patient (all objects when none is known)."""
    objects = result.objects
    principal = [f for f in objects
                 if f.node is not None and f.node.patient_id == result.original_patient_id]
    return principal or objects


async def _patient(opened: OpenIndex, result: SetResult) -> PatientRecord:
    """The index's record of the set's patient (allocated at first sight)."""
    first = _principal_objects(result)[0]
    assert first.node is not None
    key = patient_key(first.node.patient_id, first.issuer, first.node.study_uid)
    return await opened.index.patient(key, first.node.patient_name)


async def plan_sets(
    opened: OpenIndex, processed: list[SetResult], options: BatchOptions
) -> dict[int, SetPlan]:
    """The plan of each processed set: its patient's date offset from the index (patients
    are looked up in set order, in this process only) and its synthetic birth date."""
    plans: dict[int, SetPlan] = {}
    for result in processed:
        patient = await _patient(opened, result)
        objects = _principal_objects(result)
        birth = synthetic_birth_date(
            _principal(f.age for f in objects),
            _principal(f.birth_date for f in objects),
            _principal(f.study_date for f in objects),
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


def verify_set(result: SetResult, written: list[Written]) -> None:
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


async def record_set(opened: OpenIndex, result: SetResult, written: list[Written]) -> None:
    """Record the set's studies and every written instance in the PHI index."""
    patient = await _patient(opened, result)
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


def remove_stale(folder: Path, names: set[str]) -> None:
    """Remove objects a previous run wrote into a set folder that this run did not."""
    for path in folder.iterdir():
        if path.is_file() and OUTPUT_NAME.match(path.name) and path.name not in names:
            path.unlink()


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------


def _pool(jobs: int, files: int) -> Pool | None:
    if jobs <= 1 or files < MIN_FILES_FOR_POOL:
        return None
    # Forking is cheap and safe here: no event loop, connection or thread exists yet.
    return start_pool(min(jobs, files // CHUNK + 1), start_method="fork")


def _tasks(
    processed: list[SetResult], plans: dict[int, SetPlan], out: Path
) -> tuple[list[Task], list[int], dict[int, Path]]:
    """The objects to de-identify with their sizes, and each set's output folder (a set
    whose folder cannot be made safely fails)."""
    tasks: list[Task] = []
    sizes: list[int] = []
    folders: dict[int, Path] = {}
    for result in processed:
        try:
            folder = contained(out, output_folder(result.number), "set folder")
        except UnsafePath as exc:
            result.errors.append(f"not written: {exc.reason}")
            result.status = "failed"
            continue
        folders[result.number] = folder
        folder.mkdir(parents=True, exist_ok=True)
        tasks += [(result.number, k, f.path, str(folder), plans[result.number])
                  for k, f in enumerate(result.objects)]
        sizes += [_size(Path(f.path)) for f in result.objects]
    return tasks, sizes, folders


async def _run(options: BatchOptions, pool: Pool | None, results: list[SetResult],
               progress: Progress, day: date) -> None:
    opened = await open_index(options.data_dir, options.database_url, options.site_id,
                              max_connections=1)
    try:
        paths = [str(p) for r in results for p in r.paths]
        progress.stage("checking", len(paths))
        scanned = iter(map_chunks(pool, scan_chunk, paths, progress, chunk=CHUNK,
                                  sizes=[_size(p) for r in results for p in r.paths]))
        for result in results:
            result.files = [next(scanned) for _ in result.paths]
            check_set(result)
        processed = number_sets(results, options)
        plans = await plan_sets(opened, processed, options)
        tasks, sizes, folders = _tasks(processed, plans, options.output)
        progress.stage("de-identifying", len(tasks))
        done = map_chunks(pool, deidentify_chunk, tasks, progress, chunk=CHUNK, sizes=sizes)
        by_set: dict[int, list[Written]] = {}
        for item in done:
            by_set.setdefault(item.set_number, []).append(item)
        for result in processed:
            if result.number not in folders:
                continue
            written = sorted(by_set.get(result.number, []), key=lambda w: w.position)
            verify_set(result, written)
            remove_stale(folders[result.number], {w.name for w in written if w.name})
            await record_set(opened, result, written)
        # The tracking file's rows of this run, kept in the index too.
        await record_tracking(opened.pool, day, tracking_rows(processed, options.hospital))
    finally:
        await opened.close()


def run_batch(options: BatchOptions, progress: Progress | None = None) -> BatchSummary:
    """Check, de-identify and verify every set of ``options.root``; write the tracking
    file and the report into the output folder and return the summary. Raises
    ``ValueError`` when the output folder lies inside a set folder."""
    started = time.perf_counter()
    out = options.output
    out.mkdir(parents=True, exist_ok=True)
    results = [SetResult(folder, set_files(folder)) for folder in find_sets(options.root, out)]
    pool = _pool(options.jobs, sum(len(r.paths) for r in results))
    day = date.today()  # the run's date, in the index and in the tracking file's name
    try:
        asyncio.run(_run(options, pool, results, progress or NoProgress(), day))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    summary = BatchSummary(results)
    summary.tracking = write_tracking(out, [r for r in results if r.number], options.hospital,
                                      day)
    summary.seconds = time.perf_counter() - started
    summary.report = write_report(out / REPORT_NAME, summary, force=options.force)
    return summary
