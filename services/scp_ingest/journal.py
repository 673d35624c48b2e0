"""The Storage SCP's journal: where a received object is durable before Success.

A C-STORE's data set is written, as it arrives, to a file in ``partial/`` (a PS3.10 file:
the file meta from the command, then the data set as received). When it is complete and
checked, it is *committed*: its data is flushed to the disk (``fdatasync``), it is
renamed into ``ready/`` under a name that carries what the relay needs (its incoming key,
or its quarantine reason in a side file, and the calling AE title), and ``ready/`` itself
is flushed, so the entry survives a kill -9 and a power cut. Only then is the C-STORE
answered. A large data set is handed to the disk in steps while it arrives
(``sync_file_range``, which does not wait), so that flush waits for its last step only.
Commits are grouped: entries completed at once (by several associations, or by several
receiver processes into the same folder) are flushed by one pass of a committing thread
and share the directory flush.

The :class:`Relay` drains ``ready/``: it stores each entry in the object store, announces
it on the broker (confirmed) and records it, then deletes the entry. At start it replays
what a previous run left there; what is in ``partial/`` was never answered and is deleted.
An entry relayed twice (the process died between its announcement and its deletion) is
announced twice under the same key: the worker is idempotent.

A volume with less than ``min_free_bytes`` free, or one that fills during a write or a
flush, refuses the object: nothing of it is kept and the C-STORE is answered A700.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import itertools
import json
import logging
import mmap
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.dicom.errors import RejectedObject
from shared.ingest import Ingest, IngestFailed, ObjectTooLarge, fallback_key, validate
from shared.observability.logging import log_fields
from shared.observability.metrics import JOURNAL_ENTRIES, RECEIVE_FAILURES

log = logging.getLogger(__name__)

ENTRY_SUFFIX = ".dcm"
REFUSAL_SUFFIX = ".json"
_counter = itertools.count()


# Received bytes handed to the disk while the rest of the data set arrives (see
# :func:`start_writeback`), in steps of this many bytes.
WRITEBACK_STEP = 256 * 1024
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``sync_file_range`` from the C library, or None where there is none."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_writeback = _sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes at ``offset`` of ``fd`` to the disk
    now, without waiting (``SYNC_FILE_RANGE_WRITE``): the commit's ``fdatasync`` then
    waits for the last step only, not for the whole object. Durability still comes from
    that ``fdatasync``; where the call does not exist or fails, nothing changes."""
    if _writeback is not None:
        _writeback(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class JournalFull(OSError):
    """The journal's volume cannot take the object."""


def _ae_part(calling_ae: str) -> str:
    text = calling_ae.encode("ascii", "replace")[:16]
    return text.hex() or "-"


def _calling_ae(part: str) -> str:
    if part == "-":
        return ""
    try:
        return bytes.fromhex(part).decode("ascii", "replace")
    except ValueError:
        return ""


@dataclass(frozen=True)
class EntryName:
    """What the name of a ready entry says (see :func:`entry_name`)."""

    key: str  # the incoming key; for a refused entry, its quarantine key
    calling_ae: str
    refused: bool


def entry_name(key: str, calling_ae: str, refused: bool) -> str:
    """``<time>-<pid>-<n>.<digest>.<suffix>.<calling AE hex>.dcm`` for an object to
    announce (its key is ``<digest[:2]>/<digest>.<suffix>.dcm``), and
    ``<time>-<pid>-<n>.refused.<uuid>.<calling AE hex>.dcm`` for a refused one (its
    quarantine key and reason in the side file). The time first: replayed in order."""
    order = f"{time.time_ns():020d}-{os.getpid()}-{next(_counter)}"
    if refused:
        return f"{order}.refused.{uuid.uuid4().hex}.{_ae_part(calling_ae)}{ENTRY_SUFFIX}"
    digest, suffix = key.rsplit("/", 1)[-1].removesuffix(ENTRY_SUFFIX).split(".")
    return f"{order}.{digest}.{suffix}.{_ae_part(calling_ae)}{ENTRY_SUFFIX}"


def parse_entry_name(name: str) -> EntryName | None:
    parts = name.removesuffix(ENTRY_SUFFIX).split(".")
    if not name.endswith(ENTRY_SUFFIX) or len(parts) != 4:
        return None
    _, first, second, ae = parts
    if first == "refused":
        return EntryName("", _calling_ae(ae), True)
    if len(first) != 64:
        return None
    return EntryName(f"{first[:2]}/{first}.{second}{ENTRY_SUFFIX}", _calling_ae(ae), False)


@dataclass
class _Commit:
    fd: int
    partial: Path
    name: str
    refusal: dict[str, str] | None
    future: asyncio.Future[None]


class Journal:
    """The folders ``partial/`` and ``ready/`` under ``folder``, and the committer."""

    def __init__(self, folder: Path, min_free_bytes: int = 0) -> None:
        self.folder = folder
        self.partial = folder / "partial"
        self.ready = folder / "ready"
        for path in (folder, self.partial, self.ready):
            path.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                path.chmod(0o700)  # received objects hold PHI
        self.min_free_bytes = min_free_bytes
        self._pending: list[_Commit] = []
        self._wake = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self.committed = asyncio.Event()  # set after every commit (the relay's wake-up)
        self._open: set[Path] = set()  # entries being received in this process
        # Associations open in this process (kept by the SCP): with more than one, a
        # commit never blocks the event loop the others need.
        self.associations = 0

    def remove_partial(self) -> int:
        """Delete what a previous run left half received (never answered Success)."""
        removed = 0
        for stale in self.partial.iterdir():
            with contextlib.suppress(OSError):
                stale.unlink()
                removed += 1
        return removed

    def ready_entries(self) -> list[Path]:
        """The committed entries, oldest first."""
        with os.scandir(self.ready) as scan:
            names = sorted(entry.name for entry in scan if entry.name.endswith(ENTRY_SUFFIX))
        return [self.ready / name for name in names]

    def has_room(self, expected_bytes: int = 0) -> bool:
        if not self.min_free_bytes:
            return True
        stats = os.statvfs(self.folder)
        return stats.f_bavail * stats.f_frsize >= self.min_free_bytes + expected_bytes

    def open_entry(self) -> tuple[int, Path]:
        """A new file in ``partial/``, open for reading and writing."""
        path = self.partial / f"{uuid.uuid4().hex}{ENTRY_SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o600)
        self._open.add(path)
        return fd, path

    def close_entry(self, partial: Path) -> None:
        """The entry of ``partial`` is no longer being received (committed or deleted)."""
        self._open.discard(partial)

    async def commit(self, fd: int, partial: Path, name: str,
                     refusal: dict[str, str] | None = None) -> None:
        """Make the entry durable in ``ready/`` under ``name``; the file descriptor is
        closed. Raises OSError (the entry is deleted) when the volume cannot keep it."""
        self.close_entry(partial)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        commit = _Commit(fd, partial, name, refusal, future)
        if self.associations <= 1 and not self._pending and not self._open and (
                self._committer is None or self._committer.done()):
            # One association, nothing else received or committed here: flushing on this
            # thread answers sooner than a hand-over to the committing thread (about
            # 0.2 ms of a 1.7 ms C-STORE of a small object), and delays nobody. With
            # several, another one's next command would wait for this flush.
            failure = self._flush([commit]).get(id(commit))
            self.committed.set()
            if failure is not None:
                raise failure
            return
        self._pending.append(commit)
        self._wake.set()
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_groups())
        await future

    async def _commit_groups(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            self._wake.clear()
            try:
                failures = await asyncio.to_thread(self._flush, group)
            except BaseException as exc:  # the thread could not even run
                failures = {id(commit): exc for commit in group}
                if isinstance(exc, asyncio.CancelledError):
                    for commit in group:
                        if not commit.future.done():
                            commit.future.set_exception(OSError("journal stopped"))
                    raise
            for commit in group:
                if commit.future.done():
                    continue
                failure = failures.get(id(commit))
                if failure is None:
                    commit.future.set_result(None)
                else:
                    commit.future.set_exception(failure)
            self.committed.set()

    def _flush(self, group: list[_Commit]) -> dict[int, BaseException]:
        """In a thread: flush each file, rename it into ``ready/``, flush ``ready/``."""
        failures: dict[int, BaseException] = {}
        for commit in group:
            target = self.ready / commit.name
            try:
                if commit.refusal is not None:
                    side = self.partial / (commit.name + REFUSAL_SUFFIX)
                    _write_durably(side, json.dumps(commit.refusal).encode())
                    os.rename(side, self.ready / (commit.name + REFUSAL_SUFFIX))
                os.fdatasync(commit.fd)
                os.close(commit.fd)
                commit.fd = -1
                os.rename(commit.partial, target)
            except OSError as exc:
                failures[id(commit)] = exc
                if commit.fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(commit.fd)
                for leftover in (commit.partial, self.ready / (commit.name + REFUSAL_SUFFIX)):
                    with contextlib.suppress(OSError):
                        leftover.unlink()
        if len(failures) < len(group):
            try:
                _flush_folder(self.ready)
            except OSError as exc:
                for commit in group:
                    if id(commit) not in failures:
                        failures[id(commit)] = exc
                        with contextlib.suppress(OSError):
                            (self.ready / commit.name).unlink()
        return failures


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _flush_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_refusal(entry: Path) -> dict[str, str]:
    try:
        refusal = json.loads(entry.with_name(entry.name + REFUSAL_SUFFIX).read_text())
        return {key: str(refusal[key]) for key in ("key", "code", "reason")}
    except (OSError, ValueError, KeyError, TypeError):
        # Its side file is written before the entry is committed; should it be lost, the
        # object is still kept, as unreadable.
        return {"key": "", "code": "unreadable", "reason": "the refusal of the object was lost"}


OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
SUCCESS = 0x0000


class JournalSink:
    """One C-STORE's data set on its way into the journal (a ``DataSetSink``)."""

    def __init__(self, journal: Journal, calling_ae: str, header: bytes,
                 max_spooled_bytes: int | None, max_object_bytes: int | None) -> None:
        self.journal = journal
        self.calling_ae = calling_ae
        self.max_spooled_bytes = max_spooled_bytes
        self.max_object_bytes = max_object_bytes
        self.fd, self.path = journal.open_entry()
        self.size = 0
        self.failed: str | None = None
        self._written = 0  # bytes in the file
        self._flushed = 0  # bytes whose writeback was started
        self._write(memoryview(header))
        self.header_size = len(header)

    def _write(self, data: memoryview) -> None:
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
                self._written += written
            if self._written - self._flushed >= WRITEBACK_STEP:
                start_writeback(self.fd, self._flushed, self._written - self._flushed)
                self._flushed = self._written
        except OSError as exc:
            self.failed = "journal-full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (
                "journal-error")
            self._remove()

    def write(self, fragment: memoryview) -> None:
        from services.scp_ingest.upper_layer import INVALID_PARAMETER, PeerError

        self.size += len(fragment)
        if self.max_spooled_bytes is not None and self.size > self.max_spooled_bytes:
            RECEIVE_FAILURES.labels(reason="too-large").inc()
            raise PeerError(INVALID_PARAMETER,
                            "data set larger than the largest object accepted")
        if self.failed is None:
            self._write(fragment)

    def _remove(self) -> None:
        self.journal.close_entry(self.path)
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError):
            self.path.unlink()

    def discard(self) -> None:
        if self.fd >= 0:
            log.info("half-received data set deleted from the journal")
        self._remove()

    async def finish(self) -> int:
        if self.failed is not None:
            RECEIVE_FAILURES.labels(reason=self.failed).inc()
            log.warning("object not received: the journal cannot keep it",
                        extra=log_fields(reason=self.failed))
            return OUT_OF_RESOURCES
        refusal: dict[str, str] | None = None
        try:
            key = self._check()
        except RejectedObject as exc:
            with open(self.path, "rb") as handle:
                key = fallback_key(handle.read(1 << 20))
            refusal = {"key": key, "code": exc.code, "reason": exc.reason}
        name = entry_name(key, self.calling_ae, refusal is not None)
        fd, self.fd = self.fd, -1
        try:
            await self.journal.commit(fd, self.path, name, refusal)
        except OSError as exc:
            reason = "journal-full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (
                "journal-error")
            RECEIVE_FAILURES.labels(reason=reason).inc()
            log.warning("object not received: the journal cannot keep it",
                        extra=log_fields(reason=reason))
            return OUT_OF_RESOURCES
        if refusal is not None:
            RECEIVE_FAILURES.labels(reason="invalid").inc()
            log.info("object refused", extra=log_fields(reason_code=refusal["code"]))
            return CANNOT_UNDERSTAND
        return SUCCESS

    def _check(self) -> str:
        """The incoming key of the complete object; RejectedObject if it is refused."""
        total = self.header_size + self.size
        if self.max_object_bytes is not None and total > self.max_object_bytes:
            raise ObjectTooLarge(
                f"the object has {total} bytes, more than the largest accepted "
                f"({self.max_object_bytes} bytes, MAX_OBJECT_BYTES)")
        with mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ) as view:
            return validate(view)  # type: ignore[arg-type]


# The relay takes this many rounds of its concurrency from the journal at a time.
RELAY_CHUNK_ROUNDS = 8


class Relay:
    """Drains the journal's ``ready/`` into the object store and the broker."""

    def __init__(self, journal: Journal, ingest: Ingest, concurrency: int = 8,
                 poll_seconds: float = 1.0, retry_seconds: float = 1.0,
                 quiet_seconds: float = 0.0, max_deferred: int = 0) -> None:
        self.journal = journal
        self.quiet_seconds = quiet_seconds
        self.max_deferred = max_deferred
        self.ingest = ingest
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self._in_flight: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.relayed = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop relaying: what is left stays in the journal for the next start, the entries
        being relayed included (relaying one again stores the same key and announces it
        again, which the worker recognises)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        failed = False
        while True:
            self.journal.committed.clear()
            entries = [entry for entry in self.journal.ready_entries()
                       if entry.name not in self._in_flight]
            JOURNAL_ENTRIES.set(len(entries) + len(self._in_flight))
            wait = self._deferral(entries)
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if entries:
                # A chunk at a time, so that objects arriving meanwhile are noticed (and
                # the relay waits for their burst to end) before the rest is relayed.
                failed = await self.relay(entries[:self.concurrency * RELAY_CHUNK_ROUNDS])
                if not failed:
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.journal.committed.wait(),
                                       self.retry_seconds if failed else self.poll_seconds)

    def _deferral(self, entries: list[Path]) -> float:
        """Seconds to wait before relaying: while objects keep arriving (the newest entry
        is younger than ``quiet_seconds``) and fewer than ``max_deferred`` wait, the
        relay leaves the cores to the receivers. Its uploads, announcements and records
        cost several times the CPU of receiving an object, and on shared cores they
        slowed the sender down to the relay's pace: a burst (a study pushed by a PACS)
        is answered at full speed and relayed right after it."""
        if not entries or not self.quiet_seconds or len(entries) >= self.max_deferred:
            return 0.0
        try:
            newest = int(entries[-1].name.split("-", 1)[0])
        except ValueError:
            return 0.0
        age = (time.time_ns() - newest) / 1e9
        return max(0.0, self.quiet_seconds - age)

    async def relay(self, entries: list[Path]) -> bool:
        """Relay ``entries`` ``concurrency`` at a time; True if any failed (it stays)."""
        limit = asyncio.Semaphore(self.concurrency)
        failures = 0

        async def one(entry: Path) -> None:
            nonlocal failures
            async with limit:
                try:
                    await self._relay_entry(entry)
                except (IngestFailed, OSError) as exc:
                    failures += 1
                    log.warning("journal entry not relayed yet; trying again",
                                extra=log_fields(error=type(exc).__name__))

        self._in_flight.update(entry.name for entry in entries)
        try:
            await asyncio.gather(*(one(entry) for entry in entries))
        finally:
            self._in_flight.difference_update(entry.name for entry in entries)
        return failures > 0

    async def _relay_entry(self, entry: Path) -> None:
        parsed = parse_entry_name(entry.name)
        if parsed is None:  # not ours: left alone, and said once per start
            log.warning("unknown file in the journal left alone")
            self._in_flight.add(entry.name)
            return
        if parsed.refused:
            refusal = read_refusal(entry)
            key = refusal["key"] or fallback_key(entry.read_bytes()[:1 << 20])
            await self.ingest.keep_refused(entry, key, refusal["code"], refusal["reason"])
        else:
            await self.ingest.relay_file(entry, parsed.key, "scp", parsed.calling_ae)
        with contextlib.suppress(FileNotFoundError):
            entry.with_name(entry.name + REFUSAL_SUFFIX).unlink()
        entry.unlink()
        self.relayed += 1

