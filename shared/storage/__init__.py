"""Object storage for the pipeline: one interface, an S3 backend and a local-folder backend.

Services receive an :class:`ObjectStore` from :func:`open_store` and use only its methods,
so the same code runs against MinIO/S3 in a hospital deployment and against a folder on a
single machine or in tests.
"""

from __future__ import annotations

from pathlib import Path

from shared.storage.base import (
    Buckets,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StorageUnavailable,
)
from shared.storage.local import LocalStore
from shared.storage.s3 import S3Store

__all__ = [
    "Buckets",
    "LocalStore",
    "ObjectNotFound",
    "ObjectStore",
    "S3Store",
    "StorageError",
    "StorageUnavailable",
    "open_store",
]


def open_store(
    s3_endpoint: str | None,
    access_key: str = "",
    secret_key: str = "",
    secure: bool = False,
    local_root: Path | None = None,
    region: str | None = None,
) -> ObjectStore:
    """An :class:`S3Store` when ``s3_endpoint`` is given, else a :class:`LocalStore`.

    Nothing is contacted here; call ``ensure_buckets`` and ``check`` at start-up. Raises
    ValueError when neither an endpoint nor a local folder is configured.
    """
    if s3_endpoint:
        return S3Store(s3_endpoint, access_key, secret_key, secure=secure, region=region)
    if local_root is None:
        raise ValueError("configure either an S3 endpoint or a local storage folder")
    return LocalStore(Path(local_root))
