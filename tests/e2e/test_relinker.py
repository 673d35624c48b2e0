"""rt-relinker in the pipeline: an RT set sent in shuffled order through several workers."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from shared.dicom.uids import UidMapper
from shared.rt.store import SetStatus, set_status
from tests import synth
from tests.helpers import site_secret
from tests.pipeline_support import Pipeline

pytestmark = pytest.mark.integration


def _status(pipeline: Pipeline, study: str) -> SetStatus | None:
    async def fetch() -> SetStatus | None:
        import asyncpg

        pool = await asyncpg.create_pool(pipeline.database_url, min_size=1, max_size=1)
        assert pool is not None
        try:
            return await set_status(pool, study)
        finally:
            await pool.close()

    return asyncio.run(fetch())


def _send_shuffled(pipeline: Pipeline, folder: Path, withheld: int | None) -> tuple[str, str]:
    """Write a generated RT set shuffled into two folders; returns the original study UID
    and the withheld CT slice's original UID."""
    rt = synth.make_rt_set(n_ct=16, n_rois=4, n_beams=2)
    objects = rt.all()
    random.Random(7).shuffle(objects)
    parts = [folder / "a", folder / "b"]
    for part in parts:
        part.mkdir(parents=True)
    missing = ""
    for n, ds in enumerate(objects):
        if withheld is not None and ds is rt.ct[withheld]:
            missing = str(ds.SOPInstanceUID)
            continue
        synth.write(ds, parts[n % 2] / f"{n:03d}.dcm")
    for part in parts:
        assert pipeline.storescu(part).returncode == 0
    return str(rt.ct[0].StudyInstanceUID), missing


def _wait_for_set(pipeline: Pipeline, study: str, objects: int) -> SetStatus:
    deadline = time.monotonic() + 120
    status = _status(pipeline, study)
    while (status is None or status.objects < objects) and time.monotonic() < deadline:
        time.sleep(0.3)
        status = _status(pipeline, study)
    assert status is not None, "the set was never checked"
    return status


def test_shuffled_rt_set_through_several_workers_ends_complete(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    pipeline.start("scp_ingest")
    pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="3")
    pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="3")
    pipeline.start("rt_relinker")
    pipeline.start("rt_relinker")
    study, _ = _send_shuffled(pipeline, tmp_path / "in", withheld=None)
    mapper = UidMapper(site_secret(pipeline.database_url))
    status = _wait_for_set(pipeline, mapper(study), 19)
    time.sleep(1)
    status = _status(pipeline, mapper(study)) or status
    assert (status.kind, status.status, status.objects) == ("rt", "complete", 19)
    assert status.problems == ()


def test_rt_set_with_a_slice_withheld_waits_naming_that_slice(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    pipeline.start("scp_ingest")
    pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="3")
    pipeline.start("rt_relinker")
    study, missing = _send_shuffled(pipeline, tmp_path / "in", withheld=5)
    mapper = UidMapper(site_secret(pipeline.database_url))
    status = _wait_for_set(pipeline, mapper(study), 18)
    time.sleep(1)
    status = _status(pipeline, mapper(study)) or status
    assert status.status == "waiting"
    assert {p.code for p in status.problems} == {"missing-instance"}
    assert all(mapper(missing) in p.detail for p in status.problems)
    assert {p.modality for p in status.problems} == {"RTSTRUCT"}
