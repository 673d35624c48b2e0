"""A written object as the pieces the engine made it of, and writing them without joining.

The engine copies everything it keeps as byte ranges of its input (:class:`Span`) and
encodes only what it changes. :class:`Encoded` holds both, in order, with the input they
point into. Writing it to a file sends the pieces as they are (``os.writev``), and a
large span, pixel data above all, goes straight from the input file to the output file
in the kernel (``os.copy_file_range``; ``os.sendfile`` or a buffered copy where the file
system refuses) when the caller has the input as a file: such bytes never pass through
Python. :meth:`Encoded.tobytes` joins the pieces once, for callers that need one buffer
(an object store's upload). Either way the bytes are the same.
"""

from __future__ import annotations

import errno
import mmap
import os
from dataclasses import dataclass

# The input an object was parsed from: the bytes of a file or message, or a file mapped
# into memory (whose pages are read only where the parser looks).
Buffer = bytes | mmap.mmap

# Spans at least this long are copied in the kernel when the input is a file: below it, a
# system call costs more than the copy through user space it saves.
KERNEL_COPY_BYTES = 64 * 1024
_MAX_BUFFERS = os.sysconf("SC_IOV_MAX")  # buffers one writev accepts
_BUFFERED_COPY_BYTES = 1 << 20
# Errors meaning "this file system or kernel cannot do that copy", not "the copy failed".
_UNSUPPORTED = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
                          errno.ENOTSUP, errno.EBADF, errno.EPERM})


class SourceChanged(OSError):
    """The input file ended before a span that was present when it was parsed: it was
    truncated or replaced meanwhile, so the output would not be what was de-identified."""


@dataclass(slots=True)
class Span:
    """Bytes ``start:end`` of the input, copied to the output as they are."""

    start: int
    end: int


Piece = bytes | Span


class Encoded:
    """A PS3.10 object as new bytes and spans of ``source``, in output order."""

    __slots__ = ("_joined", "pieces", "size", "source")

    def __init__(self, source: Buffer, pieces: list[Piece]) -> None:
        self.source = source
        self.pieces = pieces
        size = 0
        for piece in pieces:
            size += piece.end - piece.start if isinstance(piece, Span) else len(piece)
        self.size = size
        self._joined: bytes | None = None

    def tobytes(self) -> bytes:
        """The whole object in one buffer (joined once; later calls return the same)."""
        if self._joined is None:
            if len(self.pieces) == 1 and isinstance(self.pieces[0], bytes):
                self._joined = self.pieces[0]
            else:
                self._joined = b"".join(self._views(self.pieces))
        return self._joined

    def _views(self, pieces: list[Piece]) -> list[bytes | memoryview]:
        view = memoryview(self.source)
        return [view[p.start : p.end] if isinstance(p, Span) else p for p in pieces]

    def write(self, fd: int, source_fd: int | None = None,
              kernel_copy_bytes: int = KERNEL_COPY_BYTES) -> None:
        """Write the object at ``fd``'s position. With ``source_fd``, the open file that
        ``source`` holds (or maps), spans of ``kernel_copy_bytes`` or more are copied
        from it in the kernel; :class:`SourceChanged` if it has become shorter."""
        if self._joined is not None or source_fd is None:
            _write_all(fd, [self._joined] if self._joined is not None
                       else self._views(self.pieces))
            return
        pending: list[Piece] = []
        for piece in self.pieces:
            if isinstance(piece, Span) and piece.end - piece.start >= kernel_copy_bytes:
                _write_all(fd, self._views(pending))
                pending = []
                copy_range(source_fd, fd, piece.start, piece.end - piece.start)
            else:
                pending.append(piece)
        _write_all(fd, self._views(pending))

    def same_as(self, existing: bytes) -> bool:
        """Whether ``existing`` (a file written before) holds exactly this object."""
        if len(existing) != self.size:
            return False
        if self._joined is not None:
            return existing == self._joined
        view, position = memoryview(existing), 0
        for piece in self._views(self.pieces):
            if view[position : position + len(piece)] != piece:
                return False
            position += len(piece)
        return True


def _write_all(fd: int, buffers: list[bytes | memoryview]) -> None:
    """Every byte of ``buffers``, in order, with as few system calls as the kernel allows."""
    pending = [memoryview(b) for b in buffers if len(b)]
    first = 0
    while first < len(pending):
        written = os.writev(fd, pending[first : first + _MAX_BUFFERS])
        while first < len(pending) and written >= len(pending[first]):
            written -= len(pending[first])
            first += 1
        if written:
            pending[first] = pending[first][written:]


def copy_range(source_fd: int, fd: int, offset: int, count: int) -> None:
    """Append ``count`` bytes of ``source_fd`` from ``offset`` at ``fd``'s position:
    ``copy_file_range`` where the kernel and file systems allow it, else ``sendfile``,
    else reading and writing through a buffer."""
    end = offset + count
    for method in (_copy_file_range, _sendfile):
        try:
            while offset < end:
                offset += _copied(method(source_fd, fd, offset, end - offset))
            return
        except OSError as exc:
            if isinstance(exc, SourceChanged) or exc.errno not in _UNSUPPORTED:
                raise
    while offset < end:
        chunk = os.pread(source_fd, min(end - offset, _BUFFERED_COPY_BYTES), offset)
        offset += _copied(len(chunk))
        _write_all(fd, [chunk])


def _copy_file_range(source_fd: int, fd: int, offset: int, count: int) -> int:
    return os.copy_file_range(source_fd, fd, count, offset)


def _sendfile(source_fd: int, fd: int, offset: int, count: int) -> int:
    return os.sendfile(fd, source_fd, offset, count)


def _copied(count: int) -> int:
    if count == 0:
        raise SourceChanged(errno.EIO, "the input file became shorter while it was read")
    return count
