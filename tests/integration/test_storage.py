"""Object storage against a real S3 server and a local folder: the same behaviour from both."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import random
import socket
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from shared.storage import (
    Buckets,
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    StorageError,
    StorageUnavailable,
    open_store,
)

if TYPE_CHECKING:
    from tests.s3_server import S3Control, S3Endpoint, S3StoreFixture

pytestmark = pytest.mark.integration

T = TypeVar("T")
LARGE = 20 * 1024 * 1024
AWKWARD_METADATA = {
    "patient-name": "Zoë Müller-Łukasiewicz",
    "Reason": "患者 refused: 100% sure, not %41 encoded",
    "padded": "  spaces at both ends  ",
    "lines": "first line\nsecond\tline",
    "empty": "",
    "ascii": "plain value",
}


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@dataclass
class Target:
    kind: str
    store: ObjectStore
    buckets: Buckets


@pytest.fixture(params=["s3", "local"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """The same tests on the S3 server and on a local folder."""
    if request.param == "s3":
        fixture: S3StoreFixture = request.getfixturevalue("s3_store")
        yield Target("s3", fixture.store, fixture.buckets)
        return
    store = LocalStore(tmp_path / "objects")
    buckets = Buckets()
    run(store.ensure_buckets(buckets.all()))
    yield Target("local", store, buckets)
    run(store.close())


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[LocalStore, Buckets]]:
    store = LocalStore(tmp_path / "objects")
    buckets = Buckets()
    run(store.ensure_buckets(buckets.all()))
    yield store, buckets
    run(store.close())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _files_under(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


# -- both backends -------------------------------------------------------------------------


def test_bytes_round_trip_and_overwrite_replaces_content_and_metadata(target: Target) -> None:
    store, bucket = target.store, target.buckets.incoming

    async def scenario() -> None:
        await store.put(bucket, "obj/1.dcm", b"\x00first\xff", {"source-ae": "CT01"})
        assert await store.get(bucket, "obj/1.dcm") == b"\x00first\xff"
        assert await store.metadata(bucket, "obj/1.dcm") == {"source-ae": "CT01"}

        await store.put(bucket, "obj/1.dcm", b"second")
        assert await store.get(bucket, "obj/1.dcm") == b"second"
        assert await store.metadata(bucket, "obj/1.dcm") == {}

        await store.put(bucket, "empty", b"")
        assert await store.get(bucket, "empty") == b""
        assert await store.list_keys(bucket) == ["empty", "obj/1.dcm"]

    run(scenario())


def test_twenty_megabyte_file_streams_up_and_down_intact(target: Target, tmp_path: Path) -> None:
    store, bucket = target.store, target.buckets.deidentified
    source = tmp_path / "large.bin"
    source.write_bytes(random.Random(7).randbytes(LARGE))
    destination = tmp_path / "download" / "nested" / "large.bin"

    async def scenario() -> None:
        await store.put_file(bucket, "study/large.bin", source, {"note": "größer"})
        assert await store.count(bucket) == 1
        assert await store.metadata(bucket, "study/large.bin") == {"note": "größer"}
        await store.get_file(bucket, "study/large.bin", destination)

    run(scenario())
    assert destination.stat().st_size == LARGE
    assert _sha256(destination) == _sha256(source)
    assert sorted(os.listdir(destination.parent)) == ["large.bin"]  # no temporary file left


def test_get_file_replaces_an_existing_download(target: Target, tmp_path: Path) -> None:
    store, bucket = target.store, target.buckets.exports
    destination = tmp_path / "export.zip"
    destination.write_bytes(b"stale content that is longer than the new one")

    async def scenario() -> None:
        await store.put(bucket, "export.zip", b"new")
        await store.get_file(bucket, "export.zip", destination)

    run(scenario())
    assert destination.read_bytes() == b"new"


def test_metadata_with_non_ascii_and_awkward_text_round_trips(
    target: Target, tmp_path: Path
) -> None:
    store, bucket = target.store, target.buckets.quarantine
    source = tmp_path / "refused.dcm"
    source.write_bytes(b"DICM")
    expected = {key.lower(): value for key, value in AWKWARD_METADATA.items()}

    async def scenario() -> None:
        await store.put(bucket, "from-bytes", b"x", AWKWARD_METADATA)
        await store.put_file(bucket, "from-file", source, AWKWARD_METADATA)
        assert await store.metadata(bucket, "from-bytes") == expected
        assert await store.metadata(bucket, "from-file") == expected

    run(scenario())


@pytest.mark.parametrize(
    "metadata",
    [{"source_ae": "CT01"}, {"naïve": "x"}, {"": "x"}, {"a": "1", "A": "2"}, {"n": 1}],
    ids=["underscore", "non-ascii-key", "empty-key", "same-key-twice", "non-text-value"],
)
def test_metadata_that_cannot_travel_as_headers_is_refused_before_writing(
    target: Target, metadata: dict[str, Any]
) -> None:
    store, bucket = target.store, target.buckets.incoming

    async def scenario() -> None:
        with pytest.raises(ValueError):
            await store.put(bucket, "refused", b"x", metadata)
        assert not await store.exists(bucket, "refused")

    run(scenario())


def test_listing_by_prefix_with_nested_keys_exists_and_delete(target: Target) -> None:
    store, buckets = target.store, target.buckets
    keys = [
        "study1/series1/a.dcm",
        "study1/series1/b.dcm",
        "study1/series2/c.dcm",
        "study10/x.dcm",
        "top.dcm",
    ]

    async def scenario() -> None:
        for key in reversed(keys):
            await store.put(buckets.incoming, key, key.encode())
        assert await store.list_keys(buckets.incoming) == keys
        assert await store.list_keys(buckets.incoming, "study1/") == keys[:3]
        assert await store.list_keys(buckets.incoming, "study1") == keys[:4]
        assert await store.list_keys(buckets.incoming, "study1/series1/a") == keys[:1]
        assert await store.list_keys(buckets.incoming, "study1/series") == keys[:3]
        assert await store.list_keys(buckets.incoming, "nothing/") == []
        assert await store.count(buckets.incoming, "study1/") == 3
        assert await store.count(buckets.incoming) == 5
        assert await store.list_keys(buckets.deidentified) == []

        assert await store.exists(buckets.incoming, "study1/series2/c.dcm")
        assert not await store.exists(buckets.incoming, "study1/series2")  # a prefix only
        assert not await store.exists(buckets.deidentified, "study1/series2/c.dcm")

        await store.delete(buckets.incoming, "study1/series2/c.dcm")
        await store.delete(buckets.incoming, "study1/series2/c.dcm")  # absent: no error
        await store.delete(buckets.incoming, "never/existed")
        assert not await store.exists(buckets.incoming, "study1/series2/c.dcm")
        assert await store.list_keys(buckets.incoming, "study1/") == keys[:2]

        # the emptied "folder" can be written again
        await store.put(buckets.incoming, "study1/series2/d.dcm", b"d")
        assert await store.get(buckets.incoming, "study1/series2/d.dcm") == b"d"

    run(scenario())


def test_many_objects_are_deleted_at_once(target: Target) -> None:
    store, buckets = target.store, target.buckets
    keys = [f"study/{n:04d}.dcm" for n in range(1_203)]  # more than one request's 1,000

    async def scenario() -> None:
        for key in keys:
            await store.put(buckets.incoming, key, b"x")
        await store.put(buckets.deidentified, keys[0], b"kept")
        await store.delete_many(buckets.incoming, [*keys[:-3], "never/existed"])
        assert await store.list_keys(buckets.incoming) == keys[-3:]
        assert await store.get(buckets.deidentified, keys[0]) == b"kept"  # another bucket
        await store.delete_many(buckets.incoming, [])
        await store.delete_many("no-such-bucket", keys[:2])  # nothing to delete
        with pytest.raises(ValueError):
            await store.delete_many(buckets.incoming, ["../outside"])
        assert await store.list_keys(buckets.incoming) == keys[-3:]

    run(scenario())


def test_missing_object_raises_object_not_found(target: Target, tmp_path: Path) -> None:
    store, bucket = target.store, target.buckets.incoming
    destination = tmp_path / "never.dcm"

    async def scenario() -> None:
        with pytest.raises(ObjectNotFound):
            await store.get(bucket, "missing.dcm")
        with pytest.raises(ObjectNotFound):
            await store.metadata(bucket, "missing.dcm")
        with pytest.raises(ObjectNotFound):
            await store.get_file(bucket, "missing.dcm", destination)
        assert not await store.exists(bucket, "missing.dcm")

    run(scenario())
    assert not destination.exists()
    assert list(tmp_path.glob(".never.dcm*")) == []


def test_missing_bucket_raises_object_not_found(target: Target, tmp_path: Path) -> None:
    store = target.store
    absent = "absent-" + target.buckets.incoming[-8:]
    source = tmp_path / "object"
    source.write_bytes(b"x")

    async def scenario() -> None:
        with pytest.raises(ObjectNotFound):
            await store.get(absent, "key")
        with pytest.raises(ObjectNotFound):
            await store.put(absent, "key", b"x")
        with pytest.raises(ObjectNotFound):
            await store.put_file(absent, "key", source)
        with pytest.raises(ObjectNotFound):
            await store.list_keys(absent)
        assert not await store.exists(absent, "key")
        await store.delete(absent, "key")

    run(scenario())


def test_missing_source_file_is_a_local_error_and_writes_nothing(
    target: Target, tmp_path: Path
) -> None:
    store, bucket = target.store, target.buckets.incoming

    async def scenario() -> None:
        with pytest.raises(FileNotFoundError):
            await store.put_file(bucket, "from-nowhere", tmp_path / "no-such-file")
        with pytest.raises(IsADirectoryError):
            await store.put_file(bucket, "from-folder", tmp_path)
        assert await store.list_keys(bucket) == []

    run(scenario())


@pytest.mark.parametrize(
    "key", ["../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "trailing/", ""]
)
def test_keys_that_could_escape_the_bucket_are_refused(
    target: Target, tmp_path: Path, key: str
) -> None:
    store, bucket = target.store, target.buckets.incoming
    before = _files_under(tmp_path)

    async def scenario() -> None:
        with pytest.raises(ValueError):
            await store.put(bucket, key, b"escaped")
        with pytest.raises(ValueError):
            await store.get(bucket, key)
        with pytest.raises(ValueError):
            await store.delete(bucket, key)

    run(scenario())
    assert _files_under(tmp_path) == before


def test_concurrent_writes_and_reads_all_complete(target: Target) -> None:
    store, bucket = target.store, target.buckets.incoming
    keys = [f"batch/{n:03d}.dcm" for n in range(40)]

    async def scenario() -> None:
        await asyncio.gather(
            *(store.put(bucket, key, key.encode(), {"n": key[6:9]}) for key in keys)
        )
        contents = await asyncio.gather(*(store.get(bucket, key) for key in keys))
        assert contents == [key.encode() for key in keys]
        assert await store.count(bucket, "batch/") == len(keys)

    run(scenario())


def test_readiness_check_passes_on_a_working_store(target: Target) -> None:
    run(target.store.check())


# -- S3 server -----------------------------------------------------------------------------


def test_stopped_s3_server_is_reported_quickly_and_the_store_recovers_after_restart(
    s3_store: S3StoreFixture, s3_control: S3Control, s3_endpoint: S3Endpoint
) -> None:
    store, bucket = s3_store.store, s3_store.buckets.incoming
    run(store.put(bucket, "kept.dcm", b"survives the restart", {"state": "stored"}))

    s3_control.stop()
    failures: list[StorageUnavailable] = []
    timings: list[float] = []

    async def while_down() -> None:
        for attempt in (
            store.get(bucket, "kept.dcm"),
            store.put(bucket, "new.dcm", b"x"),
            store.exists(bucket, "kept.dcm"),
            store.list_keys(bucket),
            store.metadata(bucket, "kept.dcm"),
            store.delete_many(bucket, ["kept.dcm", "new.dcm"]),
            store.check(),
        ):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable) as caught:
                await attempt
            timings.append(time.monotonic() - started)
            failures.append(caught.value)

    run(while_down())
    assert max(timings) < 5, timings
    for failure in failures:
        message = str(failure)
        assert s3_endpoint.endpoint in message
        assert s3_endpoint.secret_key not in message
        assert s3_endpoint.access_key not in message

    s3_control.start()

    async def after_restart() -> None:
        await store.check()
        assert await store.get(bucket, "kept.dcm") == b"survives the restart"
        assert await store.metadata(bucket, "kept.dcm") == {"state": "stored"}
        await store.put(bucket, "new.dcm", b"after")
        assert await store.list_keys(bucket) == ["kept.dcm", "new.dcm"]

    run(after_restart())


def test_s3_readiness_check_fails_when_a_bucket_in_use_disappears(
    s3_store: S3StoreFixture, s3_endpoint: S3Endpoint
) -> None:
    from minio import Minio

    client = Minio(
        s3_endpoint.endpoint, s3_endpoint.access_key, s3_endpoint.secret_key, secure=False
    )
    client.remove_bucket(s3_store.buckets.exports)
    with pytest.raises(StorageUnavailable, match=s3_store.buckets.exports):
        run(s3_store.store.check())


def test_s3_server_that_accepts_connections_but_never_answers_times_out() -> None:
    async def scenario(store: S3Store) -> float:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="timed out"):
            # wait_for only keeps a broken timeout from hanging the test run
            await asyncio.wait_for(store.get("incoming", "k"), timeout=10)
        return time.monotonic() - started

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        store = S3Store(f"127.0.0.1:{silent.getsockname()[1]}", "key", "secret", read_timeout=0.5)
        elapsed = run(scenario(store))
    run(store.close())  # after the listening socket is gone, so no request can still hang
    assert elapsed < 3


def test_s3_endpoint_given_as_url_and_wrong_credentials(s3_endpoint: S3Endpoint) -> None:
    scheme = "https" if s3_endpoint.secure else "http"
    host = s3_endpoint.endpoint.split("://", 1)[-1]
    store = S3Store(f"{scheme}://{host}", s3_endpoint.access_key, s3_endpoint.secret_key)
    assert store.endpoint == host
    assert store.secure == s3_endpoint.secure
    run(store.check())
    run(store.close())
    with pytest.raises(ValueError, match="credentials"):
        S3Store(f"http://user:password@{host}", "", "")


def test_closed_s3_store_refuses_further_use(s3_endpoint: S3Endpoint) -> None:
    store = S3Store(s3_endpoint.endpoint, s3_endpoint.access_key, s3_endpoint.secret_key)
    run(store.close())
    run(store.close())  # closing twice is harmless
    with pytest.raises(StorageError, match="closed"):
        run(store.check())


# -- local folder --------------------------------------------------------------------------


def test_local_layout_is_plain_files_with_metadata_in_a_parallel_tree(
    local: tuple[LocalStore, Buckets],
) -> None:
    store, buckets = local
    run(store.put(buckets.incoming, "study/a.dcm", b"content", {"Reason": "ok"}))
    assert (store.root / "incoming" / "study" / "a.dcm").read_bytes() == b"content"
    assert (store.root / ".meta" / "incoming" / "study" / "a.dcm.json").is_file()
    assert run(store.list_keys(buckets.incoming)) == ["study/a.dcm"]

    run(store.delete(buckets.incoming, "study/a.dcm"))
    assert _files_under(store.root) == set()
    assert not (store.root / "incoming" / "study").exists()  # emptied folders pruned
    assert (store.root / "incoming").is_dir()


def test_local_write_failing_before_the_rename_leaves_the_previous_object(
    local: tuple[LocalStore, Buckets], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, buckets = local
    bucket = buckets.deidentified
    run(store.put(bucket, "series/obj.dcm", b"previous", {"version": "1"}))
    before = _files_under(store.root)

    def failing_fsync(descriptor: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageError):
        run(store.put(bucket, "series/obj.dcm", b"replacement", {"version": "2"}))
    with pytest.raises(StorageError):
        run(store.put(bucket, "series/new.dcm", b"never visible", {"version": "2"}))
    monkeypatch.undo()

    assert _files_under(store.root) == before  # no partial or temporary file anywhere
    assert run(store.get(bucket, "series/obj.dcm")) == b"previous"
    assert run(store.metadata(bucket, "series/obj.dcm")) == {"version": "1"}
    assert run(store.list_keys(bucket)) == ["series/obj.dcm"]


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_local_put_file_whose_source_fails_mid_read_leaves_nothing(
    local: tuple[LocalStore, Buckets],
) -> None:
    store, buckets = local
    bucket = buckets.incoming
    run(store.put(bucket, "obj.dcm", b"previous"))
    before = _files_under(store.root)

    # Opening this file works; reading its first page fails with EIO, like a failing disk.
    with pytest.raises(OSError) as caught:
        run(store.put_file(bucket, "obj.dcm", Path("/proc/self/mem"), {"a": "b"}))
    assert not isinstance(caught.value, StorageError)
    with pytest.raises(OSError):
        run(store.put_file(bucket, "other.dcm", Path("/proc/self/mem")))

    assert _files_under(store.root) == before
    assert run(store.get(bucket, "obj.dcm")) == b"previous"
    assert run(store.metadata(bucket, "obj.dcm")) == {}


def test_local_key_cannot_be_both_an_object_and_a_folder(
    local: tuple[LocalStore, Buckets],
) -> None:
    store, buckets = local
    bucket = buckets.incoming
    run(store.put(bucket, "a/b", b"inside"))
    with pytest.raises(StorageError, match="collides"):
        run(store.put(bucket, "a", b"over the folder"))
    run(store.put(bucket, "c", b"file"))
    with pytest.raises(StorageError, match="collides"):
        run(store.put(bucket, "c/d", b"under the file", {"x": "y"}))
    assert run(store.list_keys(bucket)) == ["a/b", "c"]
    assert run(store.metadata(bucket, "c")) == {}


def test_local_temporary_file_names_are_reserved_and_never_listed(
    local: tuple[LocalStore, Buckets],
) -> None:
    store, buckets = local
    leftover = store.root / buckets.incoming / f".tmp-{'0' * 32}"
    leftover.write_bytes(b"from a crash")
    run(store.put(buckets.incoming, "real.dcm", b"x"))
    assert run(store.list_keys(buckets.incoming)) == ["real.dcm"]
    with pytest.raises(ValueError):
        run(store.put(buckets.incoming, f"dir/.tmp-{'a' * 32}", b"x"))


def test_local_readiness_check_fails_without_a_writable_root_or_a_bucket(
    local: tuple[LocalStore, Buckets], tmp_path: Path
) -> None:
    store, buckets = local
    run(store.check())

    (store.root / buckets.exports).rmdir()
    with pytest.raises(StorageUnavailable, match=buckets.exports):
        run(store.check())

    not_a_folder = tmp_path / "file-instead-of-folder"
    not_a_folder.write_bytes(b"")
    with pytest.raises(StorageUnavailable):
        run(LocalStore(not_a_folder).check())
    with pytest.raises(StorageUnavailable):
        run(LocalStore(tmp_path / "never-created").check())


def test_local_bucket_names_are_validated(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for name in ("../up", ".meta", "a/b", "UPPER", "x"):
        with pytest.raises(ValueError):
            run(store.ensure_buckets([name]))
    assert list(tmp_path.iterdir()) == []


# -- factory -------------------------------------------------------------------------------


def test_open_store_picks_s3_when_an_endpoint_is_configured_else_the_folder(
    tmp_path: Path,
) -> None:
    s3 = open_store("127.0.0.1:9000", "key", "secret", False, tmp_path)
    assert isinstance(s3, S3Store)
    run(s3.close())
    local = open_store(None, "", "", False, tmp_path)
    assert isinstance(local, LocalStore)
    assert local.root == tmp_path
    with pytest.raises(ValueError):
        open_store(None, "", "", False, None)
