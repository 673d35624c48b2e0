"""The same commands against a deployment: qr-fetcher and exporter as their own processes,
commands over RabbitMQ, objects in S3, the index in PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import synth
from tests.e2e.test_retrieve import STUDIES, study_files
from tests.orthanc import Orthanc
from tests.pipeline_support import Pipeline

pytestmark = pytest.mark.integration


def anon(pipeline: Pipeline, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args],
                          capture_output=True, text=True, env={**pipeline.env, **env},
                          timeout=180)


def test_query_retrieve_and_export_work_the_same_against_a_deployment(
        pipeline: Pipeline, orthanc_factory: Any, tmp_path: Path) -> None:
    pacs: Orthanc = orthanc_factory("PACS",
                                    modalities={"ANONSCP": ("127.0.0.1", pipeline.scp_port)})
    destination: Orthanc = orthanc_factory("RESEARCH", check_called_aet=True)
    study = STUDIES[0]
    pacs.upload(study_files(study, tmp_path / "files"))
    pacs_env = {"PACS_HOST": "127.0.0.1", "PACS_PORT": str(pacs.dicom_port),
                "PACS_AE_TITLE": "PACS", "QR_ARRIVAL_WAIT_SECONDS": "2"}
    export_env = {"EXPORT_HOST": "127.0.0.1", "EXPORT_PORT": str(destination.dicom_port),
                  "EXPORT_CALLED_AE": "RESEARCH", "EXPORT_QUIET_SECONDS": "0"}
    pipeline.start("scp_ingest")
    pipeline.start("anonymizer_worker")
    pipeline.start("rt_relinker")
    # Without a qr-fetcher the command says so at once.
    missing = anon(pipeline, "query")
    assert missing.returncode == 4 and "no qr-fetcher is running" in missing.stderr
    pipeline.start("qr_fetcher", **pacs_env)
    pipeline.start("exporter", **export_env)

    found = anon(pipeline, "query", "--json")
    assert found.returncode == 0, found.stderr
    (listed,) = json.loads(found.stdout)
    assert listed["study_uid"] == study.uid and listed["instance_count"] == study.instances

    retrieved = anon(pipeline, "retrieve", study.uid, "--wait", "--no-progress")
    assert retrieved.returncode == 0, retrieved.stdout + retrieved.stderr
    pipeline.wait_for(lambda c: c["deidentified"] == study.instances)
    assert json.loads(anon(pipeline, "query", "--json").stdout)[0]["already_imported"] is True

    pseudonym = _pseudonym(pipeline)
    exported = anon(pipeline, "export", "--patient", pseudonym, "--wait", "--no-progress")
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert len(destination.instances()) == study.instances
    phi = synth.phi_strings(synth.phi_for(study.patient))
    for orthanc_id in destination.instances():
        data = destination.instance_file(orthanc_id)
        assert not [s for s in phi if s in data]
    jobs = json.loads(anon(pipeline, "jobs", "--json").stdout)
    assert [job["kind"] for job in jobs] == ["export", "retrieve"]
    assert all(job["status"] == "complete" for job in jobs)


def _pseudonym(pipeline: Pipeline) -> str:
    import asyncio

    import asyncpg

    async def fetch() -> str:
        connection = await asyncpg.connect(pipeline.database_url)
        try:
            return str(await connection.fetchval("SELECT pseudo_patient_id FROM patient"))
        finally:
            await connection.close()

    return asyncio.run(fetch())
