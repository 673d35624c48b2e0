"""Names built from values in the objects never lead a write outside the output:
``anon deidentify``, ``anon rt-batch``, the anonymizer worker and the local object store."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from shared.deid.options import ProfileOptions
from shared.index.connect import open_index
from shared.messaging import Message
from shared.storage import Buckets, LocalStore
from shared.storage.keys import (
    DIGEST_PREFIX,
    MAX_COMPONENT,
    UnsafePath,
    contained,
    digest_name,
    safe_component,
    safe_key,
    safe_path,
    safe_path_below,
)
from tests import synth
from tests.helpers import deidentify, local_worker, outputs, read, rejected

pytestmark = pytest.mark.integration

ESCAPING_UID = "../../../../srv/x"
# A value the reader accepts as a UID (hex digests are seen in the wild) that is still no
# safe file name: it must become a digest name.
UNSAFE_NAME_UID = "-1.2.826.0.1.3680043.9.7133.5"


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def _written_outside(tmp_path: Path, out: Path, before: set[Path]) -> set[Path]:
    """Files that appeared under ``tmp_path`` but not under ``out``."""
    return {p for p in _files(tmp_path) - before if not p.is_relative_to(out)}


def test_safe_component_keeps_plain_values_and_digests_the_rest() -> None:
    assert safe_component("1.2.826.0.1.3680043.9.7133.5") == "1.2.826.0.1.3680043.9.7133.5"
    assert safe_component("123456-000001") == "123456-000001"
    assert safe_component("CT") == "CT"
    for value in ("", ".", "..", "../../x", "/srv/abs", "a/b", "a\\b", ".hidden", "-rf",
                  "Açaí", "a b", "a\x00b", "x" * (MAX_COMPONENT + 1), digest_name("CT")):
        name = safe_component(value)
        assert name == digest_name(value) and name.startswith(DIGEST_PREFIX), value
        assert name != value
    assert len({safe_component(v) for v in ("..", "../", "/..", ".")}) == 4
    assert safe_key("/srv/abs", "1.2", "..", "../../x", suffix=".dcm").count("/") == 3
    with pytest.raises(UnsafePath):
        contained(Path("/tmp/out"), "../x")
    with pytest.raises(UnsafePath):
        contained(Path("/tmp/out"), "/srv/abs")


@pytest.mark.parametrize("depth", range(4))
@pytest.mark.parametrize("inside", [True, False])
def test_safe_path_below_a_resolved_folder_decides_as_safe_path(
    tmp_path: Path, depth: int, inside: bool
) -> None:
    """A symbolic link at any depth of patient/study/series/file: followed when it stays
    inside the folder, refused when it leads out, as ``safe_path`` decides."""
    out = (tmp_path / "out").resolve()
    values = ["123456-000001", "1.2.3", "1.2.3.4", "1.2.3.4.5"]
    parts = [*values[:-1], values[-1] + ".dcm"]
    (out / "other").mkdir(parents=True)
    elsewhere = (out / "other") if inside else (tmp_path / "elsewhere")
    elsewhere.mkdir(exist_ok=True)
    parent = out.joinpath(*parts[:depth])
    parent.mkdir(parents=True, exist_ok=True)
    (parent / parts[depth]).symlink_to(elsewhere / "x", target_is_directory=depth < 3)
    if inside:
        expected = safe_path(out, *values, suffix=".dcm")
        assert safe_path_below(out, *values, suffix=".dcm") == expected
        assert expected.is_relative_to(out / "other")
    else:
        for choose in (safe_path, safe_path_below):
            with pytest.raises(UnsafePath):
                choose(out, *values, suffix=".dcm")
    assert safe_path_below(out, "654321-000001", *values[1:], suffix=".dcm") == out.joinpath(
        "654321-000001", *parts[1:])


def test_deidentify_retain_uids_with_escaping_or_unsafe_sop_instance_uids_stays_in_out(
    tmp_path: Path, index_env: str
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (ds,) = synth.make_ct_series(1)
    ds.SOPInstanceUID = ESCAPING_UID
    synth.write(ds, source / "one.dcm")
    (unsafe,) = synth.make_ct_series(1, series_number=2)
    unsafe.SOPInstanceUID = UNSAFE_NAME_UID
    synth.write(unsafe, source / "two.dcm")
    out = tmp_path / "a" / "b" / "out"
    quarantine = tmp_path / "data" / "quarantine"
    before = _files(tmp_path)
    assert deidentify([source], out, tmp_path / "data", "--retain-uids") == 0
    assert not {p for p in _written_outside(tmp_path, out, before)
                if not p.is_relative_to(quarantine)}
    # A SOP Instance UID with slashes is no UID: refused by the reader, with the reason.
    [refused] = rejected(tmp_path / "data")
    assert Path(refused["source"]).name == "one.dcm"
    assert "SOPInstanceUID is not a UID" in refused["reason"]
    # One the reader accepts but that is no safe name is written under its digest.
    (written,) = outputs(out)
    assert written.name == digest_name(UNSAFE_NAME_UID) + ".dcm"
    assert read(written).SOPInstanceUID == UNSAFE_NAME_UID  # retained, as asked


def test_deidentify_site_script_keeping_an_absolute_patient_id_stays_in_out(
    tmp_path: Path, index_env: str
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    absolute = tmp_path / "abs"  # stands for /srv/abs: outside the output
    (ds,) = synth.make_ct_series(1)
    ds.PatientID = str(absolute)
    synth.write(ds, source / "one.dcm")
    script = tmp_path / "keep.script"
    script.write_text('<script>\n<e en="T" t="00100020" n="PatientID">@keep()</e>\n</script>\n')
    out = tmp_path / "a" / "b" / "out"
    before = _files(tmp_path)
    assert deidentify([source], out, tmp_path / "data", "--script", str(script)) == 0
    assert not absolute.exists()
    assert not _written_outside(tmp_path, out, before)
    (written,) = outputs(out)
    assert written.relative_to(out).parts[0] == digest_name(str(absolute))


def test_deidentify_symlink_in_the_output_pointing_elsewhere_is_refused(
    tmp_path: Path, index_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SITE_ID", "654321")
    source = tmp_path / "in"
    source.mkdir()
    (ds,) = synth.make_ct_series(1)
    synth.write(ds, source / "one.dcm")
    out = tmp_path / "a" / "b" / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir(parents=True)
    (out / "654321-000001").symlink_to(elsewhere, target_is_directory=True)
    deidentify([source], out, tmp_path / "data")
    assert not _files(elsewhere)
    report = (tmp_path / "data" / "quarantine" / "rejected.csv").read_text()
    assert "unsafe-path" in report


def _write_rt_set(folder: Path, modality_of_ct: str) -> None:
    rt = synth.make_rt_set(n_ct=3, n_rois=1, n_beams=1)
    folder.mkdir(parents=True)
    for n, ds in enumerate(rt.all()):
        if ds.Modality == "CT":
            ds.Modality = modality_of_ct
        synth.write(ds, folder / f"{n:03d}.dcm")


def test_rt_batch_force_with_an_escaping_modality_stays_in_out(
    tmp_path: Path, index_env: str
) -> None:
    from services.cli.main import main

    root = tmp_path / "root"
    _write_rt_set(root / "set1", "../../x")
    out = tmp_path / "a" / "b" / "out"
    before = _files(tmp_path)
    main(["rt-batch", str(root), "--data-dir", str(tmp_path / "data"), "--no-progress",
          "--out", str(out), "--force"])
    assert not _written_outside(tmp_path, out, before)
    written = sorted((out / "ANON_001").iterdir())
    assert len(written) == 6
    odd = [p for p in written if p.name.startswith(digest_name("../../x") + "_")]
    assert len(odd) == 3
    assert {read(p).Modality for p in odd} == {"../../x"}
    # A second run replaces them rather than leaving stale copies beside them.
    main(["rt-batch", str(root), "--data-dir", str(tmp_path / "data"), "--no-progress",
          "--out", str(out), "--force"])
    assert sorted((out / "ANON_001").iterdir()) == written


def test_rt_batch_set_folder_that_is_a_symlink_elsewhere_is_not_written_through(
    tmp_path: Path, index_env: str
) -> None:
    from services.cli.main import main

    root = tmp_path / "root"
    _write_rt_set(root / "set1", "CT")
    out = tmp_path / "a" / "b" / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir(parents=True)
    (out / "ANON_001").symlink_to(elsewhere, target_is_directory=True)
    assert main(["rt-batch", str(root), "--data-dir", str(tmp_path / "data"),
                 "--no-progress", "--out", str(out)]) != 0
    assert not _files(elsewhere)


# -- the anonymizer worker and the local object store --------------------------------------


def _message(key: str, bucket: str = "incoming") -> Message:
    return Message({"bucket": bucket, "key": key, "source": "import"}, "c0ffee", 1,
                   "anonymize")


def test_worker_output_key_of_a_uid_unsafe_as_a_name_is_a_digest_inside_the_bucket(
    tmp_path: Path, database_url: str
) -> None:
    (ds,) = synth.make_ct_series(1)
    ds.SOPInstanceUID = UNSAFE_NAME_UID
    synth.write(ds, tmp_path / "one.dcm")

    async def run() -> list[str]:
        worker, store, buckets, (opened, broker) = await local_worker(
            tmp_path, database_url, ProfileOptions(retain_uids=True))
        try:
            await store.put(buckets.incoming, "ab/one.dcm", (tmp_path / "one.dcm").read_bytes())
            await worker.handle(_message("ab/one.dcm"))
            return await store.list_keys(buckets.deidentified)
        finally:
            await broker.close()
            await opened.close()

    before = _files(tmp_path)
    (key,) = asyncio.run(run())
    assert key.endswith("/" + digest_name(UNSAFE_NAME_UID) + ".dcm")
    assert not _written_outside(tmp_path, tmp_path / "objects", before)


def test_worker_quarantines_an_object_whose_key_would_leave_the_bucket(
    tmp_path: Path, database_url: str
) -> None:
    (ds,) = synth.make_ct_series(1)
    synth.write(ds, tmp_path / "one.dcm")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    async def run() -> tuple[list[str], dict[str, str]]:
        worker, store, buckets, (opened, broker) = await local_worker(
            tmp_path, database_url, ProfileOptions())
        try:
            # An operator's (or attacker's) link inside the bucket folder.
            (store.root / buckets.deidentified / "246810-000001").symlink_to(elsewhere)
            await store.put(buckets.incoming, "ab/one.dcm", (tmp_path / "one.dcm").read_bytes())
            await worker.handle(_message("ab/one.dcm"))  # acknowledged, not retried
            return (await store.list_keys(buckets.quarantine),
                    await store.metadata(buckets.quarantine, "ab/one.dcm"))
        finally:
            await broker.close()
            await opened.close()

    quarantined, metadata = asyncio.run(run())
    assert quarantined == ["ab/one.dcm"]
    assert metadata["reason-code"] == "unsafe-path"
    assert not _files(elsewhere)


def test_local_store_refuses_keys_that_resolve_outside_the_bucket(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.dcm").write_bytes(b"outside")

    async def run() -> None:
        store = LocalStore(tmp_path / "objects", fsync=False)
        await store.ensure_buckets(["incoming"])
        (store.root / "incoming" / "link").symlink_to(elsewhere)
        with pytest.raises(UnsafePath):
            await store.put("incoming", "link/x.dcm", b"data")
        with pytest.raises(UnsafePath):
            await store.get("incoming", "link/secret.dcm")
        with pytest.raises(UnsafePath):
            await store.put_file("incoming", "link/y.dcm", elsewhere / "secret.dcm")
        with pytest.raises(UnsafePath):
            await store.delete("incoming", "link/secret.dcm")

    asyncio.run(run())
    assert sorted(os.listdir(elsewhere)) == ["secret.dcm"]


def test_local_store_checks_every_key_after_its_folders_were_resolved(tmp_path: Path) -> None:
    """The store resolves a bucket's folder once; a link made inside it later, in the
    objects or in the metadata, is still found on the next key that goes through it. A
    bucket folder that is itself a link (a bucket on another disk) is used as its target."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    disk = tmp_path / "disk"
    disk.mkdir()

    async def run() -> None:
        store = LocalStore(tmp_path / "objects", fsync=False)
        await store.ensure_buckets(["incoming"])
        (store.root / "exports").symlink_to(disk, target_is_directory=True)
        await store.put("exports", "a/b.dcm", b"on the other disk", {"k": "v"})
        assert (disk / "a" / "b.dcm").read_bytes() == b"on the other disk"
        await store.delete("exports", "a/b.dcm")
        assert not (disk / "a").exists()  # pruned up to the bucket's folder, not beyond
        await store.put("incoming", "p/s/x.dcm", b"x", {"k": "v"})
        await store.delete("incoming", "p/s/x.dcm")
        (store.root / "incoming" / "p").symlink_to(elsewhere, target_is_directory=True)
        with pytest.raises(UnsafePath):
            await store.put("incoming", "p/s/y.dcm", b"y")
        meta = next(f for f in store.root.iterdir() if f.name.startswith(".")
                    and f.is_dir() and (f / "incoming").is_dir())
        (meta / "incoming" / "q").symlink_to(elsewhere, target_is_directory=True)
        with pytest.raises(UnsafePath):
            await store.put("incoming", "q/z.dcm", b"z", {"k": "v"})
        with pytest.raises(UnsafePath):
            await store.delete("incoming", "q/z.dcm")

    asyncio.run(run())
    assert os.listdir(elsewhere) == []
    assert disk.is_dir() and os.listdir(disk) == []


def test_worker_refuses_a_message_naming_another_bucket(
    tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    (ds,) = synth.make_ct_series(1)
    synth.write(ds, tmp_path / "one.dcm")

    async def run() -> dict[str, list[str]]:
        worker, store, buckets, (opened, broker) = await local_worker(
            tmp_path, database_url, ProfileOptions())
        try:
            data = (tmp_path / "one.dcm").read_bytes()
            # Objects the worker must never read: PHI kept in quarantine, another bucket.
            await store.ensure_buckets(["elsewhere"])
            await store.put(buckets.quarantine, "ab/one.dcm", data)
            await store.put("elsewhere", "ab/one.dcm", data)
            for bucket in (buckets.quarantine, "elsewhere", buckets.deidentified):
                await worker.handle(_message("ab/one.dcm", bucket))  # acknowledged
            counts = await opened.index.pipeline_counts()
            assert counts["received"] == counts["deidentified"] == 0
            return {b: await store.list_keys(b) for b in buckets.all()}
        finally:
            await broker.close()
            await opened.close()

    keys = asyncio.run(run())
    assert keys["deidentified"] == [] and keys["quarantine"] == ["ab/one.dcm"]
    refused = [r for r in caplog.records if "message refused" in r.getMessage()]
    assert len(refused) == 3
    assert not any(s.decode() in caplog.text for s in synth.PHI_STRINGS)
    assert "elsewhere" not in caplog.text


def test_relinker_refuses_a_message_naming_another_bucket(
    tmp_path: Path, database_url: str
) -> None:
    from services.rt_relinker.relinker import RtRelinker

    (ds,) = synth.make_ct_series(1)
    synth.write(ds, tmp_path / "one.dcm")

    async def run() -> int:
        store = LocalStore(tmp_path / "objects", fsync=False)
        buckets = Buckets()
        await store.ensure_buckets(buckets.all())
        opened = await open_index(None, database_url, max_connections=2)
        try:
            # The received object holds PHI: its original UIDs must never enter the graph.
            await store.put(buckets.incoming, "ab/one.dcm", (tmp_path / "one.dcm").read_bytes())
            relinker = RtRelinker(store, opened.pool, buckets.deidentified)
            await relinker.handle(Message({"bucket": buckets.incoming, "key": "ab/one.dcm"},
                                          "c0ffee", 1, "relink"))
            async with opened.pool.acquire() as connection:
                return int(await connection.fetchval("SELECT count(*) FROM rt_object"))
        finally:
            await opened.close()

    assert asyncio.run(run()) == 0


def test_rt_batch_report_and_temporary_links_are_replaced_not_written_through(
    tmp_path: Path, index_env: str
) -> None:
    from services.cli.main import main

    root = tmp_path / "root"
    _write_rt_set(root / "set1", "CT")
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    (out / "rt_batch_report.txt").symlink_to(victim)
    (out / ".rt_batch_report.txt.tmp").symlink_to(victim)
    assert main(["rt-batch", str(root), "--data-dir", str(tmp_path / "data"),
                 "--no-progress", "--out", str(out)]) == 0
    assert victim.read_text() == "untouched\n"
    report = out / "rt_batch_report.txt"
    assert not report.is_symlink() and "set set1: done" in report.read_text()
