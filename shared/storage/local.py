"""Object store in a local folder, for single-machine installations and tests.

Layout under ``root``: an object is the file ``<root>/<bucket>/<key>`` (a ``/`` in a key makes
sub-folders); its user metadata, if any, is the JSON file ``<root>/.meta/<bucket>/<key>.json``
(``.meta`` can never be a bucket name). Every file is written to a temporary file named
``.tmp-<32 hex digits>`` in the destination folder, flushed (and fsynced unless disabled),
then renamed over the target with ``os.replace``, so readers see the old or the new content,
never a part; temporary files are never listed and such names are refused as key segments.
Metadata is written before the object, so a new object is never visible without its
metadata. Every path is resolved and must stay inside its bucket's folder (a symbolic link
in the way that leads elsewhere is refused with ``UnsafePath``). Because keys are paths, a
key cannot be both an object and a folder (``a`` and ``a/b``): the second write fails with
:class:`StorageError`. All file I/O runs in worker threads via ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from shared.storage.base import (
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StorageUnavailable,
    normalize_metadata,
    validate_key,
    validate_prefix,
)
from shared.storage.keys import below_resolved

CHUNK = 1024 * 1024
META_FOLDER = ".meta"
META_SUFFIX = ".json"
_TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{32}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_CONFLICTS = (NotADirectoryError, IsADirectoryError, FileExistsError)
_ATTEMPTS = 3


class _SourceError(Exception):
    """Carries a read error of the caller's source file past the store's error mapping."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def _bytes_writer(data: bytes) -> Callable[[BinaryIO], None]:
    def write(out: BinaryIO) -> None:
        out.write(data)

    return write


def _copy_from(source: BinaryIO) -> Callable[[BinaryIO], None]:
    def copy(out: BinaryIO) -> None:
        while True:
            try:
                chunk = source.read(CHUNK)
            except OSError as exc:
                raise _SourceError(exc) from exc
            if not chunk:
                return
            out.write(chunk)

    return copy


class LocalStore(ObjectStore):
    """An :class:`ObjectStore` in the folder ``root`` (see the module documentation)."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self._fsync = fsync
        self._known_buckets: list[str] = []
        # Bucket and metadata folders as resolved at first use (one per process): a key's
        # path is then checked with one lstat per component, not two full resolutions.
        self._resolved: dict[Path, Path] = {}

    # -- paths and checks -----------------------------------------------------------------

    @staticmethod
    def _validate_bucket(bucket: str) -> str:
        if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ValueError(
                f"bucket name {bucket!r} must be 3-63 lower-case letters, digits, '.' or '-'"
            )
        return bucket

    @staticmethod
    def _validate_local_key(key: str) -> str:
        validate_key(key)
        if any(_TEMPORARY.fullmatch(segment) for segment in key.split("/")):
            raise ValueError(f"object key {key!r} uses a name reserved for temporary files")
        return key

    def _bucket_dir(self, bucket: str) -> Path:
        """The folder of an existing bucket; ObjectNotFound if the bucket does not exist."""
        self._validate_bucket(bucket)
        if not self.root.is_dir():
            raise StorageUnavailable(f"local object store folder {self.root} does not exist")
        folder = self.root / bucket
        if not folder.is_dir():
            raise ObjectNotFound(f"bucket {bucket} does not exist")
        return folder

    def _inside(self, folder: Path, key: str) -> Path:
        """``folder / key``, refused with UnsafePath (a RejectedObject) unless it resolves
        inside ``folder``: a symbolic link in the bucket folder never leads elsewhere."""
        return below_resolved(self._base(folder), key, "object key")

    def _base(self, folder: Path) -> Path:
        """``folder`` resolved, once per process."""
        base = self._resolved.get(folder)
        if base is None:
            base = self._resolved[folder] = folder.resolve()
        return base

    def _meta_path(self, bucket: str, key: str) -> Path:
        return self._inside(self.root / META_FOLDER / bucket, key + META_SUFFIX)

    @contextlib.contextmanager
    def _errors(self, operation: str, bucket: str, key: str) -> Iterator[None]:
        """Map file-system failures of the store itself to storage errors."""
        try:
            yield
        except _CONFLICTS as exc:
            raise StorageError(
                f"{operation} {bucket}/{key}: the key collides with an existing object or "
                "folder (a key cannot be both an object and a prefix followed by '/')"
            ) from exc
        except OSError as exc:
            raise StorageUnavailable(
                f"local object store {self.root} failed during {operation} {bucket}/{key}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from exc

    def _sync_folder(self, folder: Path) -> None:
        if not self._fsync:
            return
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _write_atomic(self, target: Path, write: Callable[[BinaryIO], None]) -> None:
        """Write ``target`` through a temporary file in its folder and ``os.replace``."""
        for attempt in range(_ATTEMPTS):
            temporary = target.parent / f".tmp-{uuid.uuid4().hex}"
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                out = open(temporary, "xb")  # noqa: SIM115 - closed below, before the rename
            except FileNotFoundError:
                # A concurrent delete pruned the (empty) folder between mkdir and open.
                if attempt == _ATTEMPTS - 1:
                    raise
                continue
            try:
                with out:
                    write(out)
                    out.flush()
                    if self._fsync:
                        os.fsync(out.fileno())
                os.replace(temporary, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            self._sync_folder(target.parent)
            return

    def _prune(self, start: Path, stop: Path) -> None:
        """Remove empty folders from ``start`` up to, not including, ``stop``."""
        folder = start
        while folder != stop and stop in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    # -- blocking implementations -----------------------------------------------------------

    def _store(
        self,
        bucket: str,
        key: str,
        write: Callable[[BinaryIO], None],
        metadata: dict[str, str],
    ) -> None:
        folder = self._bucket_dir(bucket)
        target = self._inside(folder, key)
        meta_path = self._meta_path(bucket, key)
        with self._errors("put", bucket, key):
            try:
                previous: bytes | None = meta_path.read_bytes()
            except (FileNotFoundError, NotADirectoryError):
                previous = None
            if metadata:
                document = json.dumps(metadata, ensure_ascii=False, sort_keys=True).encode()
                self._write_atomic(meta_path, _bytes_writer(document))
            elif previous is not None:
                meta_path.unlink(missing_ok=True)
            try:
                self._write_atomic(target, write)
            except BaseException:
                self._restore_metadata(meta_path, previous, bool(metadata))
                raise

    def _restore_metadata(self, meta_path: Path, previous: bytes | None, written: bool) -> None:
        """Best effort: put back the metadata that was there before a failed write."""
        with contextlib.suppress(OSError):
            if previous is not None:
                self._write_atomic(meta_path, _bytes_writer(previous))
            elif written:
                meta_path.unlink(missing_ok=True)

    def _put_file(self, bucket: str, key: str, path: Path, metadata: dict[str, str]) -> None:
        with open(path, "rb") as source:
            try:
                self._store(bucket, key, _copy_from(source), metadata)
            except _SourceError as exc:
                raise exc.error from None

    def _object_path(self, bucket: str, key: str) -> Path:
        """Path of an existing object; ObjectNotFound otherwise."""
        target = self._inside(self._bucket_dir(bucket), key)
        if not target.is_file():
            raise ObjectNotFound(f"{bucket}/{key} does not exist")
        return target

    def _read(self, bucket: str, key: str) -> bytes:
        target = self._inside(self._bucket_dir(bucket), key)
        with self._errors("get", bucket, key):
            try:
                return target.read_bytes()
            except (FileNotFoundError, *_CONFLICTS) as exc:
                raise ObjectNotFound(f"{bucket}/{key} does not exist") from exc

    def _read_to(self, bucket: str, key: str, path: Path) -> None:
        target = self._inside(self._bucket_dir(bucket), key)
        with self._errors("get", bucket, key):
            try:
                source = open(target, "rb")  # noqa: SIM115 - closed by the with below
            except (FileNotFoundError, *_CONFLICTS) as exc:
                raise ObjectNotFound(f"{bucket}/{key} does not exist") from exc
        with source:
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(
                prefix=f".{path.name}.", suffix=".part", dir=path.parent
            )
            try:
                with os.fdopen(descriptor, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK)
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise

    def _metadata(self, bucket: str, key: str) -> dict[str, str]:
        self._object_path(bucket, key)
        meta_path = self._meta_path(bucket, key)
        with self._errors("metadata", bucket, key):
            try:
                document = json.loads(meta_path.read_text(encoding="utf-8"))
            except (FileNotFoundError, NotADirectoryError):
                return {}
        if not isinstance(document, dict):
            raise StorageError(f"metadata of {bucket}/{key} is not a JSON object")
        return {str(name): str(value) for name, value in document.items()}

    def _exists(self, bucket: str, key: str) -> bool:
        try:
            self._object_path(bucket, key)
        except ObjectNotFound:
            return False
        return True

    def _delete(self, bucket: str, key: str) -> None:
        try:
            folder = self._bucket_dir(bucket)
        except ObjectNotFound:
            return
        target = self._inside(folder, key)
        meta_path = self._meta_path(bucket, key)
        with self._errors("delete", bucket, key):
            if target.is_dir():
                return  # a prefix of other keys, not an object
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                target.unlink()
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                meta_path.unlink()
        self._prune(target.parent, self._base(folder))
        self._prune(meta_path.parent, self._base(self.root / META_FOLDER / bucket))

    def _keys(self, bucket: str, prefix: str) -> list[str]:
        folder = self._bucket_dir(bucket)
        start = prefix.rpartition("/")[0]
        keys: list[str] = []
        for directory, folders, files in os.walk(folder / start if start else folder):
            relative = Path(directory).relative_to(folder).as_posix()
            base = "" if relative == "." else relative + "/"
            folders[:] = [
                name
                for name in folders
                if (base + name + "/").startswith(prefix) or prefix.startswith(base + name + "/")
            ]
            keys.extend(
                base + name
                for name in files
                if not _TEMPORARY.fullmatch(name) and (base + name).startswith(prefix)
            )
        keys.sort()
        return keys

    def _check(self, buckets: list[str]) -> None:
        if not self.root.is_dir():
            raise StorageUnavailable(f"local object store folder {self.root} does not exist")
        probe = self.root / f".tmp-{uuid.uuid4().hex}"
        try:
            with open(probe, "xb") as out:
                out.write(b"probe")
            probe.unlink()
        except OSError as exc:
            raise StorageUnavailable(
                f"local object store folder {self.root} is not writable: "
                f"{exc.strerror or type(exc).__name__}"
            ) from exc
        for name in buckets:
            if not (self.root / name).is_dir():
                raise StorageUnavailable(f"bucket {name} is missing in {self.root}")

    def _create(self, names: list[str]) -> None:
        for name in names:
            self._validate_bucket(name)
        for name in names:
            try:
                (self.root / name).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageUnavailable(
                    f"cannot create bucket {name} in {self.root}: "
                    f"{exc.strerror or type(exc).__name__}"
                ) from exc

    # -- interface ------------------------------------------------------------------------

    async def ensure_buckets(self, names: list[str]) -> None:
        await asyncio.to_thread(self._create, list(names))
        for name in names:
            if name not in self._known_buckets:
                self._known_buckets.append(name)

    async def put(
        self, bucket: str, key: str, data: bytes, metadata: dict[str, str] | None = None
    ) -> None:
        self._validate_local_key(key)
        meta = normalize_metadata(metadata)
        write = _bytes_writer(bytes(data))
        await asyncio.to_thread(self._store, bucket, key, write, meta)

    async def put_file(
        self, bucket: str, key: str, path: Path, metadata: dict[str, str] | None = None
    ) -> None:
        self._validate_local_key(key)
        meta = normalize_metadata(metadata)
        await asyncio.to_thread(self._put_file, bucket, key, Path(path), meta)

    async def get(self, bucket: str, key: str) -> bytes:
        self._validate_local_key(key)
        return await asyncio.to_thread(self._read, bucket, key)

    async def get_file(self, bucket: str, key: str, path: Path) -> None:
        self._validate_local_key(key)
        await asyncio.to_thread(self._read_to, bucket, key, Path(path))

    async def metadata(self, bucket: str, key: str) -> dict[str, str]:
        self._validate_local_key(key)
        return await asyncio.to_thread(self._metadata, bucket, key)

    async def exists(self, bucket: str, key: str) -> bool:
        self._validate_local_key(key)
        return await asyncio.to_thread(self._exists, bucket, key)

    async def delete(self, bucket: str, key: str) -> None:
        self._validate_local_key(key)
        await asyncio.to_thread(self._delete, bucket, key)

    async def delete_many(self, bucket: str, keys: list[str]) -> None:
        for key in keys:
            self._validate_local_key(key)

        def remove() -> None:
            for key in keys:
                self._delete(bucket, key)

        await asyncio.to_thread(remove)

    async def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        return await asyncio.to_thread(self._keys, bucket, prefix)

    async def check(self) -> None:
        await asyncio.to_thread(self._check, list(self._known_buckets))

    async def close(self) -> None:
        return None
