"""Reading an input of ``anon deidentify`` and writing its output.

A large input is mapped into memory rather than read: the parser only touches the pages
of the elements it walks, and what is kept as it came (the pixel data above all) goes
from the input file to the output file in the kernel (:meth:`Encoded.write`), never
through Python. A small input is read whole, which costs less than mapping it.

A mapped input is read while it is processed: one truncated meanwhile by another program
makes the copy come up short (:class:`~shared.dicom.output.SourceChanged`, the file is
refused as unreadable), or, if it happens while the parser walks the very pages cut off,
ends the process with SIGBUS as any reader of a mapped file would.

Outputs are written under a temporary name in their folder and renamed, so no reader
ever sees a half-written object.
"""

from __future__ import annotations

import mmap
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from shared.dicom.output import Buffer, Encoded

MAP_BYTES = 256 * 1024  # inputs at least this large are mapped, smaller ones read


@dataclass
class InputFile:
    """An open input: its descriptor, and its bytes (mapped or read)."""

    fd: int
    buffer: Buffer

    @property
    def mapped(self) -> bool:
        return isinstance(self.buffer, mmap.mmap)

    def close(self) -> None:
        """Close the descriptor. A mapping goes with the last reference to it (the parsed
        object and its result point into it), as closing it under them would fail."""
        os.close(self.fd)
        self.buffer = b""


def open_input(path: Path, map_bytes: int = MAP_BYTES) -> InputFile:
    """Open ``path`` and map it (a regular file of ``map_bytes`` or more) or read it."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_size >= max(map_bytes, 1):
            try:
                return InputFile(fd, mmap.mmap(fd, info.st_size, access=mmap.ACCESS_READ))
            except OSError:
                pass  # a file system that cannot map files: read it
        return InputFile(fd, _read_all(fd, info.st_size))
    except BaseException:
        os.close(fd)
        raise


def _read_all(fd: int, size: int) -> bytes:
    """Everything up to the end of the file, however much that is by now."""
    chunks = []
    while chunk := os.read(fd, max(size, 1 << 16)):
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def write_atomically(path: Path, encoded: Encoded, source_fd: int | None = None) -> None:
    """Write ``encoded`` via a temporary file and a rename, so no half-written object is
    ever seen; ``source_fd`` is the input file ``encoded`` was read from, when it was
    (its large spans are then copied in the kernel).

    A re-run finds identical files in place; leaving them untouched spares the file system
    the flush that renaming over an existing file triggers.
    """
    try:
        if path.stat().st_size == encoded.size and encoded.same_as(path.read_bytes()):
            return
    except FileNotFoundError:
        pass
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = _create(temporary)
    try:
        encoded.write(fd, source_fd)
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temporary, path)


def _create(temporary: Path) -> int:
    """A new, empty temporary file. Whatever is in its place (a link left there) is
    removed, never written through; missing folders are made. Both are rare, so they are
    handled when the creation fails rather than checked before every file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(temporary, flags, 0o666)
    except FileExistsError:
        temporary.unlink()
    except FileNotFoundError:
        temporary.parent.mkdir(parents=True, exist_ok=True)
    return os.open(temporary, flags, 0o666)
