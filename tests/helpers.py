"""Helpers for tests that run ``anon deidentify`` or the anonymizer worker and inspect what
they wrote."""

from __future__ import annotations

import asyncio
import csv
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pydicom
from pydicom.dataset import Dataset

from services.anonymizer_worker.worker import AnonymizerWorker
from services.cli.main import main
from shared.deid.options import ProfileOptions
from shared.deid.profile import build_profile
from shared.deid.pseudonymizer import Pseudonymizer
from shared.index.connect import OpenIndex, open_index
from shared.messaging import MemoryBroker
from shared.messaging.topology import Topology
from shared.storage import Buckets, LocalStore

DCMDUMP = Path("/usr/bin/dcmdump")


def deidentify(sources: list[Path], out: Path, data_dir: Path, *extra: str) -> int:
    """Run ``anon deidentify`` in this process (the index comes from DATABASE_URL)."""
    args = ["deidentify", *map(str, sources), "--out", str(out), "--data-dir", str(data_dir),
            "--recursive", "--no-progress", "--quarantine", str(data_dir / "quarantine"),
            *extra]
    return main(args)


def outputs(out: Path) -> list[Path]:
    return sorted(out.rglob("*.dcm"))


def rejected(data_dir: Path) -> list[dict[str, str]]:
    report = data_dir / "quarantine" / "rejected.csv"
    if not report.exists():
        return []
    with report.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def tree(out: Path) -> dict[str, bytes]:
    """Every written file by relative path, with its bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in outputs(out)}


def walk(ds: Dataset) -> Iterator[Dataset]:
    """The data set and every item of every sequence, at any depth."""
    yield ds
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                yield from walk(item)


# Detached patient/study management classes: references to a patient or study, whose
# "instance" UID is the Study Instance UID, not an object of the set.
MANAGEMENT_CLASSES = "1.2.840.10008.3.1.2."


def references(ds: Dataset, management: bool = False) -> set[str]:
    """Referenced SOP Instance UIDs at any depth (of objects, or with ``management`` of
    patients and studies)."""
    return {
        str(item.ReferencedSOPInstanceUID)
        for item in walk(ds)
        if "ReferencedSOPInstanceUID" in item
        and str(item.get("ReferencedSOPClassUID", "")).startswith(MANAGEMENT_CLASSES)
        == management
    }


def dcmdump_errors(path: Path) -> str:
    """What dcmdump reports as errors for a file ('' when it reads cleanly)."""
    if not DCMDUMP.exists():
        raise AssertionError("dcmdump (DCMTK) is required: apt-get install dcmtk")
    result = subprocess.run([str(DCMDUMP), str(path)], capture_output=True, text=True,
                            errors="replace", check=False)
    problems = [line for line in result.stderr.splitlines() if line.startswith("E:")]
    if result.returncode != 0 and not problems:
        problems.append(f"exit status {result.returncode}")
    return "\n".join(problems)


def read(path: Path, force: bool = False) -> Dataset:
    """Read a file completely (every sequence); ``force`` for inputs without file meta."""
    ds = pydicom.dcmread(path, force=force)
    for _ in ds.iterall():
        pass
    return ds


def site_secret(database_url: str) -> bytes:
    async def fetch() -> bytes:
        connection = await asyncpg.connect(database_url)
        try:
            return bytes(await connection.fetchval("SELECT secret FROM site"))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def originals_by_pseudo_sop(database_url: str) -> dict[str, str]:
    """Original SOP Instance UID of each written object, from the index's instance table."""
    async def fetch() -> dict[str, str]:
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch(
                "SELECT pseudo_sop_instance_uid, original_sop_instance_uid FROM instance")
        finally:
            await connection.close()
        return {r["pseudo_sop_instance_uid"]: r["original_sop_instance_uid"] for r in rows}

    return asyncio.run(fetch())


async def local_worker(root: Path, database_url: str, options: ProfileOptions | None = None
                       ) -> tuple[AnonymizerWorker, LocalStore, Buckets,
                                  tuple[OpenIndex, MemoryBroker]]:
    """An anonymizer worker on a local-folder store in ``root / "objects"`` (every bucket
    created), the in-process broker and the index at ``database_url`` (site 246810); close
    the index and the broker of the last element when done."""
    store = LocalStore(root / "objects", fsync=False)
    buckets = Buckets()
    await store.ensure_buckets(buckets.all())
    opened = await open_index(None, database_url, "246810", max_connections=2)
    broker = MemoryBroker(Topology("t-", 3))
    await broker.connect()
    pseudonymizer = Pseudonymizer(opened.index, opened.site,
                                  build_profile(options or ProfileOptions()))
    return AnonymizerWorker(store, buckets, broker, pseudonymizer), store, buckets, (
        opened, broker)
