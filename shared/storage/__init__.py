"""Object storage for the pipeline: one interface, an S3 backend and a local-folder backend.

Services receive an :class:`ObjectStore` from :func:`open_store` and use only its methods,
so the same code runs against MinIO/S3 in a hospital deployment and against a folder on a
single machine or in tests. The backends are imported on first use (the S3 client is slow to
import; ``shared.storage.keys`` alone should not pay for it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.storage.base import (
    Buckets,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    StorageUnavailable,
)

if TYPE_CHECKING:
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
        from shared.storage.s3 import S3Store

        return S3Store(s3_endpoint, access_key, secret_key, secure=secure, region=region)
    if local_root is None:
        raise ValueError("configure either an S3 endpoint or a local storage folder")
    from shared.storage.local import LocalStore

    return LocalStore(Path(local_root))


def __getattr__(name: str) -> Any:
    if name == "LocalStore":
        from shared.storage.local import LocalStore

        return LocalStore
    if name == "S3Store":
        from shared.storage.s3 import S3Store

        return S3Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
