"""The object-store interface shared by every backend, its errors, and the rules for names.

Services are written against :class:`ObjectStore` and never learn which backend they were
given. Both backends apply the same validation so that a key or a metadata entry accepted by
one is accepted by the other: keys are relative, ``/``-separated paths without empty, ``.``
or ``..`` segments; metadata keys are ASCII letters, digits and ``-`` (compared and returned
in lower case); metadata values are any text.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

MAX_KEY_BYTES = 1024
_METADATA_KEY = re.compile(r"[A-Za-z0-9-]+")


class StorageError(Exception):
    """Base class of every error raised by an object store."""


class StorageUnavailable(StorageError):
    """The store cannot be reached or does not answer in time (never carries credentials)."""


class ObjectNotFound(StorageError):
    """The object (or the bucket that should hold it) does not exist."""


@dataclass(frozen=True)
class Buckets:
    """Names of the buckets used by the pipeline; configurable per deployment."""

    incoming: str = "incoming"
    deidentified: str = "deidentified"
    quarantine: str = "quarantine"
    exports: str = "exports"

    def all(self) -> list[str]:
        """Every bucket name, in a fixed order."""
        return [self.incoming, self.deidentified, self.quarantine, self.exports]


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is an acceptable object key, else raise ValueError."""
    if not isinstance(key, str) or not key:
        raise ValueError("object key must be a non-empty string")
    if "\x00" in key:
        raise ValueError("object key must not contain NUL characters")
    if key.startswith("/"):
        raise ValueError(f"object key must be relative, not {key!r}")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(f"object key is longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"object key {key!r} has an empty, '.' or '..' segment")
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it may be used to list keys (any key start, or empty)."""
    if not isinstance(prefix, str):
        raise ValueError("prefix must be a string")
    if prefix.startswith("/") or "\x00" in prefix:
        raise ValueError(f"prefix must be relative, not {prefix!r}")
    if ".." in prefix.split("/"):
        raise ValueError(f"prefix {prefix!r} has a '..' segment")
    return prefix


def normalize_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """Validate user metadata and return it with lower-case keys.

    Keys are restricted to ASCII letters, digits and ``-`` because S3 carries them as HTTP
    header names (``x-amz-meta-<key>``), which are case-insensitive and where some servers
    turn ``_`` into ``-``. Values may be any text; backends encode them as needed.
    """
    normalized: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not _METADATA_KEY.fullmatch(key):
            raise ValueError(f"metadata key {key!r} must consist of ASCII letters, digits and '-'")
        if not isinstance(value, str):
            raise ValueError(f"metadata value for {key!r} must be a string")
        lowered = key.lower()
        if lowered in normalized:
            raise ValueError(f"metadata key {key!r} is given twice (keys ignore case)")
        normalized[lowered] = value
    return normalized


class ObjectStore(ABC):
    """An object store holding named buckets of keyed objects with user metadata.

    All methods are coroutines; blocking I/O runs off the event loop. Writes are
    all-or-nothing: a reader sees either the previous object or the complete new one.
    A missing bucket is reported as :class:`ObjectNotFound` (``exists`` answers False and
    ``delete`` does nothing); an unreachable store as :class:`StorageUnavailable`. Local
    source or destination file problems in ``put_file``/``get_file`` surface as the usual
    ``OSError`` subclasses.
    """

    @abstractmethod
    async def ensure_buckets(self, names: list[str]) -> None:
        """Create the buckets that do not exist yet."""

    @abstractmethod
    async def put(
        self, bucket: str, key: str, data: bytes, metadata: dict[str, str] | None = None
    ) -> None:
        """Store ``data`` under ``key``, replacing any object and metadata there."""

    @abstractmethod
    async def put_file(
        self, bucket: str, key: str, path: Path, metadata: dict[str, str] | None = None
    ) -> None:
        """Store the content of the file at ``path``, streamed rather than read at once."""

    @abstractmethod
    async def get(self, bucket: str, key: str) -> bytes:
        """The whole content of an object."""

    @abstractmethod
    async def get_file(self, bucket: str, key: str, path: Path) -> None:
        """Download an object to ``path`` (replaced atomically; parent folders created)."""

    @abstractmethod
    async def metadata(self, bucket: str, key: str) -> dict[str, str]:
        """The user metadata of an object (lower-case keys)."""

    @abstractmethod
    async def exists(self, bucket: str, key: str) -> bool:
        """Whether the object exists."""

    @abstractmethod
    async def delete(self, bucket: str, key: str) -> None:
        """Remove an object; nothing happens if it is absent."""

    async def delete_many(self, bucket: str, keys: list[str]) -> None:
        """Remove objects (absent ones are no matter), in as few requests as the store
        allows; an error names how many were not removed."""
        for key in keys:
            await self.delete(bucket, key)

    @abstractmethod
    async def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` (a plain string prefix, not a folder), sorted."""

    async def count(self, bucket: str, prefix: str = "") -> int:
        """Number of keys starting with ``prefix``."""
        return len(await self.list_keys(bucket, prefix))

    @abstractmethod
    async def check(self) -> None:
        """Readiness probe: raise StorageUnavailable unless the store can serve requests."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and threads; the store must not be used afterwards."""

    async def __aenter__(self) -> ObjectStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
