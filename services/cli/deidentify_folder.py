"""``anon deidentify``: de-identify files and folders into an output tree.

Work is spread over processes (``--jobs``), each with its own connection to the PHI index.
Patients are allocated in the order they first appear in the sorted input before any
object is written, so the pseudonyms do not depend on the number of processes; UIDs and
dates are keyed functions of the site secret, so re-running gives identical files.
Originals are only read. Rejected files are copied to the quarantine folder and listed
with their reason in its ``rejected.csv``.
"""

from __future__ import annotations

import asyncio
import csv
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from tqdm import tqdm

from shared.deid.ctp_filter import ObjectFilter
from shared.deid.ctp_rules import compile_script
from shared.deid.ctp_script import load_script
from shared.deid.engine import identity
from shared.deid.lookup import LookupTable
from shared.deid.options import ProfileOptions
from shared.deid.profile import build_profile
from shared.deid.pseudonymizer import Pseudonymizer
from shared.deid.rules import RuleSet
from shared.dicom.errors import RejectedObject
from shared.dicom.parse import parse
from shared.index.connect import OpenIndex, open_index
from shared.index.database import DatabaseUnavailable
from shared.index.phi_index import patient_key
from shared.storage.keys import UnsafePath, safe_path

CHUNK = 16


@dataclass(frozen=True)
class JobSettings:
    """What every worker process needs to de-identify on its own."""

    database_url: str
    options: ProfileOptions
    out: Path
    object_filter: ObjectFilter = field(default_factory=ObjectFilter)
    script: Path | None = None  # CTP anonymizer script instead of the built-in profile
    script_dialect: str = "auto"
    lookup_table: Path | None = None

    def rules(self, site_id: str) -> RuleSet:
        """The rule set every process compiles for itself (scripts are checked before)."""
        if self.script is None:
            return build_profile(self.options)
        lookup = LookupTable.load(self.lookup_table) if self.lookup_table else None
        return compile_script(load_script(self.script, self.script_dialect), site_id, lookup)


@dataclass(frozen=True, slots=True)
class FileResult:
    index: int
    source: str
    output: str = ""
    patient: str = ""
    study: str = ""
    code: str = ""
    reason: str = ""


@dataclass
class Summary:
    accepted: int = 0
    rejected: int = 0
    patients: set[str] = field(default_factory=set)
    studies: set[str] = field(default_factory=set)
    seconds: float = 0.0
    report: Path | None = None

    @property
    def files_per_second(self) -> float:
        return (self.accepted + self.rejected) / self.seconds if self.seconds else 0.0

    def lines(self) -> list[str]:
        lines = [
            f"accepted:  {self.accepted}",
            f"rejected:  {self.rejected}",
            f"patients:  {len(self.patients)}",
            f"studies:   {len(self.studies)}",
            f"seconds:   {self.seconds:.2f}",
            f"files/s:   {self.files_per_second:.1f}",
        ]
        if self.report is not None:
            lines.append(f"rejected files and reasons: {self.report}")
        return lines


class _Worker:
    """Per-process state: an event loop, a connection to the index, the pseudonymizer."""

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.opened: OpenIndex = self.loop.run_until_complete(
            open_index(None, settings.database_url, max_connections=1, run_migrations=False)
        )
        self.pseudonymizer = Pseudonymizer(
            self.opened.index,
            self.opened.site,
            settings.rules(self.opened.site.site_id),
            settings.object_filter,
            batch_size=64,
            offload=False,  # this process's loop has nothing else to do
        )

    def process(self, index: int, source: Path) -> FileResult:
        try:
            data = source.read_bytes()
        except OSError as exc:
            return FileResult(index, str(source), code="unreadable", reason=exc.strerror or "")
        try:
            result, record = self.loop.run_until_complete(self.pseudonymizer.prepare(data))
        except RejectedObject as exc:
            return FileResult(index, str(source), code=exc.code, reason=exc.reason)
        except (asyncpg.PostgresError, OSError):
            raise  # the index is down: stop the run rather than quarantine every file
        except Exception as exc:
            # One odd object must not stop a run. The message is left out: it could quote
            # values of the object.
            return FileResult(index, str(source), code="error",
                              reason=f"unexpected {exc.__class__.__name__} while processing")
        try:
            target = safe_path(
                self.settings.out,
                result.patient_id or "unknown",
                result.study_instance_uid,
                result.series_instance_uid,
                result.sop_instance_uid,
                suffix=".dcm",
            )
        except UnsafePath as exc:
            return FileResult(index, str(source), code=exc.code, reason=exc.reason)
        _write_atomically(target, result.data)
        self.loop.run_until_complete(self.pseudonymizer.record(record))
        relative = target.relative_to(self.settings.out.resolve())
        return FileResult(
            index, str(source), str(relative), result.patient_id, result.study_instance_uid
        )

    def flush(self) -> None:
        """Write the pending instance records to the index."""
        self.loop.run_until_complete(self.pseudonymizer.flush())

    def close(self) -> None:
        self.flush()
        self.loop.run_until_complete(self.opened.close())
        self.loop.close()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file and a rename, so no half-written object is ever seen.

    A re-run finds identical files in place; leaving them untouched spares the file system
    the flush that renaming over an existing file triggers.
    """
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)  # a link left there is removed, never written through
    temporary.write_bytes(data)
    os.replace(temporary, path)


_worker: _Worker | None = None
_init_error: str = ""


def _init_process(settings: JobSettings) -> None:
    # An exception here would make the pool start processes forever: keep it and report
    # it with the first chunk instead.
    global _worker, _init_error
    try:
        _worker = _Worker(settings)
    except Exception as exc:
        _init_error = f"{exc.__class__.__name__}: {exc}"


def _ready_worker() -> _Worker:
    if _worker is None:
        raise DatabaseUnavailable(f"a worker process could not start: {_init_error}")
    return _worker


def _process_chunk(chunk: list[tuple[int, str]]) -> list[FileResult]:
    worker = _ready_worker()
    results = [worker.process(i, Path(p)) for i, p in chunk]
    worker.flush()  # pool processes are not closed cleanly: flush with every chunk
    return results


def _scan_chunk(chunk: list[tuple[int, str]]) -> list[tuple[int, tuple[str, str], str] | None]:
    """The patient of each file (None for files that will be rejected anyway)."""
    _ready_worker()
    found: list[tuple[int, tuple[str, str], str] | None] = []
    for i, path in chunk:
        try:
            ident = identity(parse(Path(path).read_bytes()))
        except (RejectedObject, OSError):
            found.append(None)
            continue
        key = patient_key(ident.patient_id, ident.issuer_of_patient_id, ident.study_instance_uid)
        found.append((i, key, ident.patient_name))
    return found


def _chunks(files: list[Path]) -> Iterator[list[tuple[int, str]]]:
    for start in range(0, len(files), CHUNK):
        yield [(start + k, str(p)) for k, p in enumerate(files[start : start + CHUNK])]


async def _allocate_in_order(
    opened: OpenIndex, scanned: list[tuple[int, tuple[str, str], str]]
) -> None:
    for _, key, name in sorted(scanned):
        await opened.index.patient(key, name)


def deidentify_files(
    files: list[Path],
    out: Path,
    quarantine: Path,
    options: ProfileOptions,
    data_dir: Path,
    database_url: str | None = None,
    site_id: str | None = None,
    jobs: int = 1,
    progress: bool = True,
    object_filter: ObjectFilter | None = None,
    script: Path | None = None,
    script_dialect: str = "auto",
    lookup_table: Path | None = None,
) -> Summary:
    """De-identify ``files`` into ``out``; see the module docstring."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    opened = asyncio.run(prepare_index(data_dir, database_url, site_id))
    settings = JobSettings(opened.url, options, out, object_filter or ObjectFilter(),
                           script, script_dialect, lookup_table)
    results: list[FileResult] = []
    bar = tqdm(total=len(files), unit="file", disable=not progress, desc="de-identifying")
    try:
        if jobs <= 1 or len(files) < 2 * CHUNK:
            worker = _Worker(settings)
            try:
                for i, path in enumerate(files):
                    results.append(worker.process(i, path))
                    bar.update(1)
            finally:
                worker.close()
        else:
            context = multiprocessing.get_context("spawn")
            with context.Pool(jobs, _init_process, (settings,)) as pool:
                scanned = [
                    s for chunk in pool.imap(_scan_chunk, _chunks(files)) for s in chunk if s
                ]
                asyncio.run(_allocate(opened.url, scanned))
                for chunk_results in pool.imap_unordered(_process_chunk, _chunks(files)):
                    results.extend(chunk_results)
                    bar.update(len(chunk_results))
    finally:
        bar.close()
    summary = Summary(seconds=time.perf_counter() - started)
    rejected = sorted((r for r in results if r.code), key=lambda r: r.index)
    for r in results:
        if not r.code:
            summary.accepted += 1
            summary.patients.add(r.patient)
            summary.studies.add(r.study)
    summary.rejected = len(rejected)
    if rejected:
        summary.report = _quarantine(rejected, quarantine)
    summary.seconds = time.perf_counter() - started
    return summary


async def prepare_index(data_dir: Path, url: str | None, site_id: str | None) -> OpenIndex:
    """Create or upgrade the index and its site before workers connect to it."""
    opened = await open_index(data_dir, url, site_id, max_connections=1)
    await opened.close()
    return opened


async def _allocate(url: str, scanned: list[tuple[int, tuple[str, str], str]]) -> None:
    opened = await open_index(None, url, max_connections=1, run_migrations=False)
    try:
        await _allocate_in_order(opened, scanned)
    finally:
        await opened.close()


def _quarantine(rejected: list[FileResult], folder: Path) -> Path:
    """Copy rejected inputs (they may hold PHI) and write the report beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / "rejected.csv"
    with report.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "quarantined_as", "reason_code", "reason"])
        for r in rejected:
            copy = folder / f"{r.index:06d}_{Path(r.source).name}"
            try:
                shutil.copyfile(r.source, copy)
            except OSError:
                copy = Path("")
            writer.writerow([r.source, copy.name, r.code, r.reason])
    return report
