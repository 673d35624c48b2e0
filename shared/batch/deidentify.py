"""De-identifying a collection of files into an output tree, with a pool of processes.

Each process has its own connection to the PHI index and its own
:class:`~shared.deid.pseudonymizer.Pseudonymizer`. With more than one process, patients
are allocated in the order they first appear in the input before any object is written,
so the pseudonyms do not depend on the number of processes; UIDs and dates are keyed
functions of the site secret, so re-running gives identical files. Inputs are only read.
Refused inputs are copied to the quarantine folder and listed with their reason in its
``rejected.csv`` (:mod:`shared.batch.rejected`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from shared.batch.fileio import InputFile, open_input, write_atomically
from shared.batch.pool import map_chunks, start_pool
from shared.batch.progress import NoProgress, Progress
from shared.batch.rejected import Rejection, write_quarantine
from shared.deid.configured import load_rules
from shared.deid.ctp_filter import ObjectFilter
from shared.deid.engine import identity
from shared.deid.options import ProfileOptions
from shared.deid.pseudonymizer import Pseudonymizer
from shared.deid.rules import RuleSet
from shared.dicom.errors import RejectedObject
from shared.dicom.output import SourceChanged
from shared.dicom.parse import parse
from shared.index.connect import OpenIndex, open_index
from shared.index.database import DatabaseUnavailable
from shared.index.phi_index import patient_key
from shared.storage.keys import UnsafePath, safe_path_below

CHUNK = 16  # files per task sent to a process

# A file's position in the run and its path; what a process is sent.
Item = tuple[int, str]
# A file's position, its patient key and name (what the allocation before the run needs).
Scanned = tuple[int, tuple[str, str], str]


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
        """The rule set every process compiles for itself (checked before the run by
        :func:`shared.deid.configured.check_script`)."""
        return load_rules(self.options, site_id, self.script, self.script_dialect,
                          self.lookup_table)


@dataclass(frozen=True, slots=True)
class FileResult:
    """What became of one input: where it was written, or (``code``) why it was refused."""

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
    patients: set[str] = field(default_factory=set)
    studies: set[str] = field(default_factory=set)
    seconds: float = 0.0
    rejections: list[Rejection] = field(default_factory=list)  # in input order
    report: Path | None = None  # rejected.csv, when anything was refused

    @property
    def rejected(self) -> int:
        return len(self.rejections)

    @property
    def files_per_second(self) -> float:
        return (self.accepted + self.rejected) / self.seconds if self.seconds else 0.0


class FileWorker:
    """One process's state: an event loop, a connection to the index, the pseudonymizer."""

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
        self._out: tuple[Path, Path] = (Path(), Path())

    def process(self, index: int, source: Path) -> FileResult:
        return self.loop.run_until_complete(self._process(index, source))

    def process_chunk(self, chunk: list[Item]) -> list[FileResult]:
        """The files of a chunk, in one run of the event loop (entering it per file costs
        more than de-identifying a small file's header)."""
        return self.loop.run_until_complete(self._process_chunk(chunk))

    async def _process_chunk(self, chunk: list[Item]) -> list[FileResult]:
        return [await self._process(i, Path(p)) for i, p in chunk]

    async def _process(self, index: int, source: Path) -> FileResult:
        try:
            input_file = open_input(source)
        except OSError as exc:
            return FileResult(index, str(source), code="unreadable", reason=exc.strerror or "")
        try:
            return await self._deidentify(index, source, input_file)
        except SourceChanged as exc:
            return FileResult(index, str(source), code="unreadable", reason=exc.strerror or "")
        finally:
            input_file.close()

    async def _deidentify(self, index: int, source: Path, input_file: InputFile) -> FileResult:
        try:
            result, record = await self.pseudonymizer.prepare(input_file.buffer)
        except RejectedObject as exc:
            return FileResult(index, str(source), code=exc.code, reason=exc.reason)
        except (asyncpg.PostgresError, OSError):
            raise  # the index is down: stop the run rather than quarantine every file
        except Exception as exc:
            # One odd object must not stop a run. The message is left out: it could quote
            # values of the object.
            return FileResult(index, str(source), code="error",
                              reason=f"unexpected {exc.__class__.__name__} while processing")
        out = self._resolved_out()
        try:
            target = safe_path_below(
                out,
                result.patient_id or "unknown",
                result.study_instance_uid,
                result.series_instance_uid,
                result.sop_instance_uid,
                suffix=".dcm",
            )
        except UnsafePath as exc:
            return FileResult(index, str(source), code=exc.code, reason=exc.reason)
        # Spans of a mapped input are offsets into the file itself (those of a deflated
        # one point into its inflated copy, and its output has no span anyway).
        from_file = input_file.mapped and result.encoded.source is input_file.buffer
        write_atomically(target, result.encoded, input_file.fd if from_file else None)
        await self.pseudonymizer.record(record)
        return FileResult(
            index, str(source), str(target.relative_to(out)), result.patient_id,
            result.study_instance_uid,
        )

    def _resolved_out(self) -> Path:
        """The output folder, resolved once (per folder: a benchmark changes it)."""
        if self._out[0] != self.settings.out:
            self._out = (self.settings.out, self.settings.out.resolve())
        return self._out[1]

    def flush(self) -> None:
        """Write the pending instance records to the index."""
        self.loop.run_until_complete(self.pseudonymizer.flush())

    def close(self) -> None:
        self.flush()
        self.loop.run_until_complete(self.opened.close())
        self.loop.close()


# --- in the pool's processes ----------------------------------------------------------------

_worker: FileWorker | None = None
_init_error: str = ""


def _init_process(settings: JobSettings) -> None:
    # An exception here would make the pool start processes forever: keep it and report
    # it with the first chunk instead.
    global _worker, _init_error
    try:
        _worker = FileWorker(settings)
    except Exception as exc:
        _init_error = f"{exc.__class__.__name__}: {exc}"


def _ready_worker() -> FileWorker:
    if _worker is None:
        raise DatabaseUnavailable(f"a worker process could not start: {_init_error}")
    return _worker


def _process_chunk(chunk: list[Item]) -> list[FileResult]:
    worker = _ready_worker()
    results = worker.process_chunk(chunk)
    worker.flush()  # pool processes are not closed cleanly: flush with every chunk
    return results


def _scan_chunk(chunk: list[Item]) -> list[Scanned | None]:
    """The patient of each file (None for files that will be refused anyway)."""
    _ready_worker()
    found: list[Scanned | None] = []
    for i, path in chunk:
        try:
            input_file = open_input(Path(path))
        except OSError:
            found.append(None)
            continue
        try:
            ident = identity(parse(input_file.buffer))
        except RejectedObject:
            found.append(None)
            continue
        finally:
            input_file.close()
        key = patient_key(ident.patient_id, ident.issuer_of_patient_id, ident.study_instance_uid)
        found.append((i, key, ident.patient_name))
    return found


# --- in the parent process ------------------------------------------------------------------


def deidentify_files(
    files: list[Path],
    out: Path,
    quarantine: Path,
    options: ProfileOptions,
    data_dir: Path,
    database_url: str | None = None,
    site_id: str | None = None,
    jobs: int = 1,
    progress: Progress | None = None,
    object_filter: ObjectFilter | None = None,
    script: Path | None = None,
    script_dialect: str = "auto",
    lookup_table: Path | None = None,
) -> Summary:
    """De-identify ``files`` into ``out`` with ``jobs`` processes; see the module
    docstring. ``progress`` hears of the stages (finding patients, with more than one
    process; de-identifying)."""
    progress = progress or NoProgress()
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    opened = asyncio.run(prepare_index(data_dir, database_url, site_id))
    settings = JobSettings(opened.url, options, out, object_filter or ObjectFilter(),
                           script, script_dialect, lookup_table)
    items = [(i, str(p)) for i, p in enumerate(files)]
    if jobs <= 1 or len(files) < 2 * CHUNK:
        results = _in_this_process(settings, items, progress)
    else:
        results = _in_a_pool(settings, items, jobs, progress)
    summary = Summary()
    for r in results:
        if r.code:
            summary.rejections.append(Rejection(r.index, r.source, r.code, r.reason))
        else:
            summary.accepted += 1
            summary.patients.add(r.patient)
            summary.studies.add(r.study)
    if summary.rejections:
        summary.report = write_quarantine(summary.rejections, quarantine)
    summary.seconds = time.perf_counter() - started
    return summary


def _in_this_process(
    settings: JobSettings, items: list[Item], progress: Progress
) -> list[FileResult]:
    """In input order, so patients are allocated as they first appear."""
    progress.stage("de-identifying", len(items))
    worker = FileWorker(settings)
    try:
        return map_chunks(None, worker.process_chunk, items, progress, chunk=CHUNK)
    finally:
        worker.close()


def _in_a_pool(
    settings: JobSettings, items: list[Item], jobs: int, progress: Progress
) -> list[FileResult]:
    # Input order, not largest first: inputs that share a SOP Instance UID share one output
    # file, which then holds the later of them as with one process (mostly: a pool cannot
    # promise the order in which two processes finish).
    with start_pool(jobs, start_method="spawn", initializer=_init_process,
                    initargs=(settings,)) as pool:
        progress.stage("finding patients", len(items))
        scanned = map_chunks(pool, _scan_chunk, items, progress, chunk=CHUNK)
        asyncio.run(_allocate(settings.database_url, [s for s in scanned if s is not None]))
        progress.stage("de-identifying", len(items))
        return map_chunks(pool, _process_chunk, items, progress, chunk=CHUNK)


async def prepare_index(data_dir: Path, url: str | None, site_id: str | None) -> OpenIndex:
    """Create or upgrade the index and its site before workers connect to it."""
    opened = await open_index(data_dir, url, site_id, max_connections=1)
    await opened.close()
    return opened


async def _allocate(url: str, scanned: list[Scanned]) -> None:
    """Each patient, in the order it first appears in the input."""
    opened = await open_index(None, url, max_connections=1, run_migrations=False)
    try:
        for _, key, name in sorted(scanned):
            await opened.index.patient(key, name)
    finally:
        await opened.close()
