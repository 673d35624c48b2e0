"""S3-compatible object store (MinIO, Ceph RGW, AWS S3) through the synchronous MinIO client.

Every call of the client runs on a small thread pool owned by the store, never on the event
loop. The HTTP pool uses short timeouts (connect 2 s, read 10 s) and a single retry, so an
endpoint that is down surfaces as :class:`StorageUnavailable` quickly instead of after the
client's default minutes of retries; once the endpoint is back, the next call simply opens a
new connection. User metadata travels as ``x-amz-meta-*`` headers, which must be ASCII:
values are percent-encoded (``%`` itself, control characters, non-ASCII text and spaces at
either end) when written and decoded when read, so any text round-trips; a value written by
another tool that contains a literal ``%`` sequence is therefore decoded as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from shared.storage.base import (
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StorageUnavailable,
    normalize_metadata,
    validate_key,
    validate_prefix,
)

T = TypeVar("T")

META_PREFIX = "x-amz-meta-"
CHUNK = 1024 * 1024
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"})
_Headers = dict[str, str | list[str] | tuple[str]]
_PRINTABLE_ASCII = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "%")


def encode_metadata_value(value: str) -> str:
    """Percent-encode a metadata value so that it is a safe, exactly reversible header value."""
    encoded = quote(value, safe=_PRINTABLE_ASCII, encoding="utf-8")
    stripped = encoded.strip(" ")
    if stripped == encoded:
        return encoded
    leading = len(encoded) - len(encoded.lstrip(" "))
    trailing = len(encoded) - len(encoded.rstrip(" "))
    if not stripped:
        return "%20" * len(encoded)
    return "%20" * leading + stripped + "%20" * trailing


def decode_metadata_value(value: str) -> str:
    """Reverse :func:`encode_metadata_value`."""
    return unquote(value, encoding="utf-8", errors="strict")


def _split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """``host:port`` for the client; a ``http://``/``https://`` URL also sets ``secure``."""
    if "://" not in endpoint:
        return endpoint, secure
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https"):
        raise ValueError("S3 endpoint scheme must be http or https")
    if parts.username is not None or parts.password is not None:
        raise ValueError("S3 endpoint must not contain credentials; pass them separately")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("S3 endpoint must be a host and port, without a path")
    return parts.netloc, parts.scheme == "https"


def _reason(exc: BaseException) -> str:
    """A short, credential-free description of a connection failure."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    timed_out = False
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower()
        if isinstance(current, TimeoutError | urllib3.exceptions.TimeoutError) and not isinstance(
            current, urllib3.exceptions.NewConnectionError
        ):
            timed_out = True
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            pending.append(reason)
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
        if current.__cause__ is not None:
            pending.append(current.__cause__)
        if current.__context__ is not None:
            pending.append(current.__context__)
    return "timed out" if timed_out else type(exc).__name__


def _where(bucket: str | None, key: str | None) -> str:
    if bucket is None:
        return ""
    return f" {bucket}/{key}" if key is not None else f" bucket {bucket}"


class S3Store(ObjectStore):
    """An :class:`ObjectStore` on an S3-compatible server.

    ``endpoint`` is ``host:port`` (or an ``http://``/``https://`` URL, whose scheme then
    decides ``secure``). With ``region`` unset the client asks each bucket for its location
    once. Error messages name the endpoint, operation and bucket, never the credentials.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        region: str | None = None,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        retries: int = 1,
        max_workers: int = 8,
    ) -> None:
        host, secure = _split_endpoint(endpoint, secure)
        self.endpoint = host
        self.secure = secure
        pool_options: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"} if secure else {}
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=urllib3.Retry(
                total=retries,
                backoff_factor=0.2,
                status_forcelist=(500, 502, 503, 504),
                respect_retry_after_header=False,
            ),
            maxsize=max(10, max_workers * 4),
            **pool_options,
        )
        self._client = Minio(
            host,
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=secure,
            region=region,
            http_client=self._http,
        )
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="s3")
        self._known_buckets: list[str] = []
        self._closed = False

    # -- plumbing -------------------------------------------------------------------------

    async def _run(self, function: Callable[[], T]) -> T:
        if self._closed:
            raise StorageError(f"object store at {self.endpoint} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function)

    @contextlib.contextmanager
    def _guard(self, operation: str, bucket: str | None, key: str | None) -> Iterator[None]:
        """Translate client and connection errors into storage errors."""
        where = _where(bucket, key)
        try:
            yield
        except S3Error as exc:
            code = exc.code or "error"
            if code in NOT_FOUND_CODES:
                if code == "NoSuchBucket":
                    raise ObjectNotFound(f"bucket {bucket} does not exist") from exc
                raise ObjectNotFound(f"{bucket}/{key} does not exist") from exc
            status = getattr(exc.response, "status", 0) or 0
            error = StorageUnavailable if status >= 500 else StorageError
            raise error(
                f"{operation}{where} failed at {self.endpoint}: {code}: {exc.message}"
            ) from exc
        except ServerError as exc:
            raise StorageUnavailable(
                f"object store at {self.endpoint} failed during {operation}{where}: "
                f"HTTP {exc.status_code}"
            ) from exc
        except InvalidResponseError as exc:
            status = getattr(exc, "_code", 0) or 0
            error = StorageUnavailable if status >= 500 else StorageError
            raise error(
                f"object store at {self.endpoint} gave a non-S3 answer during "
                f"{operation}{where}: HTTP {status}"
            ) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(
                f"object store at {self.endpoint} is unavailable during {operation}{where}: "
                f"{_reason(exc)}"
            ) from exc
        except MinioException as exc:
            raise StorageError(
                f"{operation}{where} failed at {self.endpoint}: {type(exc).__name__}"
            ) from exc

    def _stat(self, bucket: str, key: str) -> Any:
        with self._guard("stat", bucket, key):
            return self._client.stat_object(bucket, key)

    # -- interface ------------------------------------------------------------------------

    async def ensure_buckets(self, names: list[str]) -> None:
        def create() -> None:
            for name in names:
                with self._guard("create", name, None):
                    if self._client.bucket_exists(name):
                        continue
                    try:
                        self._client.make_bucket(name)
                    except S3Error as exc:
                        already = exc.code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")
                        if not (already and self._client.bucket_exists(name)):
                            raise

        await self._run(create)
        for name in names:
            if name not in self._known_buckets:
                self._known_buckets.append(name)

    async def put(
        self, bucket: str, key: str, data: bytes, metadata: dict[str, str] | None = None
    ) -> None:
        validate_key(key)
        headers = self._headers(metadata)

        def upload() -> None:
            with self._guard("put", bucket, key):
                self._client.put_object(bucket, key, io.BytesIO(data), len(data), metadata=headers)

        await self._run(upload)

    async def put_file(
        self, bucket: str, key: str, path: Path, metadata: dict[str, str] | None = None
    ) -> None:
        validate_key(key)
        headers = self._headers(metadata)

        def upload() -> None:
            # A missing or unreadable source is the caller's problem, not the store's:
            # let it surface as the usual OSError before any request is made.
            with open(path, "rb"):
                pass
            with self._guard("put", bucket, key):
                self._client.fput_object(bucket, key, os.fspath(path), metadata=headers)

        await self._run(upload)

    async def get(self, bucket: str, key: str) -> bytes:
        validate_key(key)

        def download() -> bytes:
            with self._guard("get", bucket, key):
                response = self._client.get_object(bucket, key)
                try:
                    data: bytes = response.read()
                finally:
                    response.close()
                    response.release_conn()
            return data

        return await self._run(download)

    async def get_file(self, bucket: str, key: str, path: Path) -> None:
        validate_key(key)

        def download() -> None:
            with self._guard("get", bucket, key):
                response = self._client.get_object(bucket, key)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                descriptor, temporary = tempfile.mkstemp(
                    prefix=f".{path.name}.", suffix=".part", dir=path.parent
                )
                try:
                    with os.fdopen(descriptor, "wb") as out:
                        chunks = response.stream(CHUNK)
                        while True:
                            with self._guard("get", bucket, key):
                                chunk = next(chunks, None)
                            if chunk is None:
                                break
                            out.write(chunk)
                    os.replace(temporary, path)
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(temporary)
                    raise
            finally:
                response.close()
                response.release_conn()

        await self._run(download)

    async def metadata(self, bucket: str, key: str) -> dict[str, str]:
        validate_key(key)
        stat = await self._run(functools.partial(self._stat, bucket, key))
        result: dict[str, str] = {}
        for name, value in (stat.metadata or {}).items():
            lowered = str(name).lower()
            if lowered.startswith(META_PREFIX):
                result[lowered[len(META_PREFIX) :]] = decode_metadata_value(str(value))
        return result

    async def exists(self, bucket: str, key: str) -> bool:
        validate_key(key)
        try:
            await self._run(functools.partial(self._stat, bucket, key))
        except ObjectNotFound:
            return False
        return True

    async def delete(self, bucket: str, key: str) -> None:
        validate_key(key)

        def remove() -> None:
            with contextlib.suppress(ObjectNotFound), self._guard("delete", bucket, key):
                self._client.remove_object(bucket, key)

        await self._run(remove)

    async def delete_many(self, bucket: str, keys: list[str]) -> None:
        for key in keys:
            validate_key(key)

        def remove() -> None:
            # One DeleteObjects request per 1,000 keys; the client sends them as the
            # errors are read.
            with self._guard("delete", bucket, None):
                failed = list(self._client.remove_objects(
                    bucket, (DeleteObject(key) for key in keys)))
            failed = [e for e in failed if e.code not in NOT_FOUND_CODES]
            if failed:
                raise StorageError(f"delete in bucket {bucket} failed at {self.endpoint} for"
                                   f" {len(failed)} of {len(keys)} objects: {failed[0].code}")

        with contextlib.suppress(ObjectNotFound):  # no bucket: nothing to delete
            await self._run(remove)

    async def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        validate_prefix(prefix)

        def collect() -> list[str]:
            with self._guard("list", bucket, None):
                return sorted(
                    str(item.object_name)
                    for item in self._client.list_objects(
                        bucket, prefix=prefix or None, recursive=True
                    )
                    if not item.is_dir
                )

        return await self._run(collect)

    async def count(self, bucket: str, prefix: str = "") -> int:
        validate_prefix(prefix)

        def tally() -> int:
            with self._guard("list", bucket, None):
                return sum(
                    1
                    for item in self._client.list_objects(
                        bucket, prefix=prefix or None, recursive=True
                    )
                    if not item.is_dir
                )

        return await self._run(tally)

    async def check(self) -> None:
        buckets = list(self._known_buckets)

        def probe() -> None:
            with self._guard("check", None, None):
                if not buckets:
                    self._client.list_buckets()
                    return
                for name in buckets:
                    if not self._client.bucket_exists(name):
                        raise StorageUnavailable(f"bucket {name} is missing at {self.endpoint}")

        try:
            await self._run(probe)
        except StorageUnavailable:
            raise
        except StorageError as exc:
            raise StorageUnavailable(str(exc)) from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        self._http.clear()

    @staticmethod
    def _headers(metadata: dict[str, str] | None) -> _Headers:
        return {
            META_PREFIX + name: encode_metadata_value(value)
            for name, value in normalize_metadata(metadata).items()
        }
