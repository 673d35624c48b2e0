"""The deployed services follow what an administrator changes in the index while they
run: two anonymizer-worker processes pick up a replaced script within the refresh period
(nothing lost or handled twice) and keep it when a replacement is invalid, ``anon serve``
picks up a replaced filter, and the services keep their warnings in the index."""

from __future__ import annotations

import asyncio
import io
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import pydicom
import pytest

from shared.index import configuration as config
from shared.messaging import ANONYMIZE, RabbitBroker
from shared.observability.error_log import recent_errors
from shared.storage import S3Store
from tests import synth
from tests.e2e.test_serve import _serve_on
from tests.integration.test_live_configuration import site_script
from tests.pipeline_support import STORESCU, Pipeline
from tests.s3_server import free_port

pytestmark = pytest.mark.integration


def _write(folder: Path, patient: int, count: int) -> Path:
    folder.mkdir(parents=True)
    for n, ds in enumerate(synth.make_ct_series(count, patient_index=patient)):
        synth.write(ds, folder / f"{n:04d}.dcm")
    return folder


async def _query(url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(url)
    try:
        return [dict(r) for r in await connection.fetch(sql, *args)]
    finally:
        await connection.close()


async def _change(url: str, text: str) -> config.ActiveDocument:
    connection = await asyncpg.connect(url)
    try:
        return await config.replace_document(connection, config.SCRIPT, text, "admin-test")
    finally:
        await connection.close()


def _institutions(pipeline: Pipeline) -> dict[str, set[str]]:
    """The InstitutionName of the de-identified objects, by the rules that made them."""

    async def read() -> dict[str, set[str]]:
        rows = await _query(pipeline.database_url,
                            "SELECT object_key, script_name FROM instance")
        store = S3Store(pipeline.s3.endpoint, pipeline.s3.access_key, pipeline.s3.secret_key,
                        pipeline.s3.secure)
        found: dict[str, set[str]] = {}
        try:
            for row in rows:
                data = await store.get(pipeline.buckets.deidentified, row["object_key"])
                ds = pydicom.dcmread(io.BytesIO(data))
                found.setdefault(row["script_name"], set()).add(str(ds.InstitutionName))
        finally:
            await store.close()
        return found

    return asyncio.run(read())


def test_two_workers_follow_a_replaced_script_within_the_refresh_period(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    pipeline.start("scp_ingest")
    pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="2")
    pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="2")
    assert pipeline.storescu(_write(tmp_path / "before", 0, 6)).returncode == 0
    pipeline.wait_for(lambda c: c["deidentified"] >= 6)

    saved = asyncio.run(_change(pipeline.database_url, site_script()))
    # An invalid replacement is refused with its line; the saved script stays in force.
    with pytest.raises(config.InvalidDocument, match=r"^line \d+: InstitutionName"):
        asyncio.run(_change(pipeline.database_url,
                            site_script().replace("RESEARCH SITE", "@nosuchfunction()")))
    time.sleep(config.CONFIG_REFRESH_SECONDS + 1)

    assert pipeline.storescu(_write(tmp_path / "after", 1, 10)).returncode == 0
    counts = pipeline.wait_for(lambda c: c["deidentified"] >= 16)
    time.sleep(1)  # anything more would be a duplicate
    counts = pipeline.counts()
    assert counts["deidentified"] == counts["unique"] == 16 and counts["quarantined"] == 0
    assert pipeline.dead_letters() == 0

    rules = asyncio.run(_query(
        pipeline.database_url,
        "SELECT script_name, script_sha256, count(*) AS n FROM instance"
        " GROUP BY script_name, script_sha256 ORDER BY n"))
    by_name = {r["script_name"]: (r["script_sha256"], r["n"]) for r in rules}
    assert by_name["CTP script index-v1"] == (saved.sha256, 10)
    built_in = [name for name in by_name if name.startswith("built-in: PS3.15")]
    assert len(built_in) == 1 and by_name[built_in[0]][1] == 6
    assert _institutions(pipeline) == {built_in[0]: {"ANONYMIZED"},
                                       "CTP script index-v1": {"RESEARCH SITE"}}
    # Both processes took part after the change, each with the new rules.
    logs = [p.log.read_text() for p in pipeline.processes if p.name == "anonymizer_worker"]
    assert all('"script": "CTP script index-v1"' in log for log in logs)


def test_a_services_warnings_are_kept_in_the_index(pipeline: Pipeline) -> None:
    pipeline.start("anonymizer_worker")

    async def scenario() -> list[dict[str, Any]]:
        broker = RabbitBroker(pipeline.amqp_url, pipeline.topology)
        await broker.connect()
        try:
            await broker.publish(ANONYMIZE, {"bucket": "elsewhere", "key": "a/b.dcm"},
                                 correlation_id="c0ffee")
        finally:
            await broker.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            connection = await asyncpg.connect(pipeline.database_url)
            try:
                rows = await recent_errors(connection, service="anonymizer-worker")
            finally:
                await connection.close()
            if rows:
                return rows
            await asyncio.sleep(0.3)
        raise AssertionError("no warning of the anonymizer-worker in the index")

    (row,) = asyncio.run(scenario())
    assert (row["level"], row["logger"], row["fields"]) == (
        "warning", "services.anonymizer_worker.worker", {"delivery": 1})
    assert row["message"] == "message refused: it names a bucket other than the incoming one"


def test_anon_serve_follows_a_replaced_filter_and_keeps_its_warnings(
    tmp_path: Path, database_url: str
) -> None:
    port = free_port()
    serve = _serve_on(tmp_path, tmp_path / "data", port, database_url, "serve")

    def send(folder: Path) -> None:
        sent = subprocess.run(
            [str(STORESCU), "-aec", "ANONSCP", "+sd", "+r", "+sp", "*.dcm", "127.0.0.1",
             str(port), str(folder)], capture_output=True, text=True, timeout=120, check=False)
        assert sent.returncode == 0, sent.stderr[-800:]

    def rows(sql: str) -> list[dict[str, Any]]:
        return asyncio.run(_query(database_url, sql))

    def until(sql: str, expected: int) -> None:
        deadline = time.monotonic() + 60
        while len(rows(sql)) < expected:
            assert time.monotonic() < deadline, serve.log.read_text()[-2000:]
            time.sleep(0.3)

    try:
        serve.wait_ready(timeout=90)
        send(_write(tmp_path / "before", 0, 1))
        until("SELECT 1 FROM instance", 1)

        async def refuse_ct() -> None:
            connection = await asyncpg.connect(database_url)
            try:
                await config.replace_document(connection, config.FILTER,
                                              '!Modality.equals("CT")', "admin-test")
            finally:
                await connection.close()

        asyncio.run(refuse_ct())
        time.sleep(config.CONFIG_REFRESH_SECONDS + 1)
        send(_write(tmp_path / "after", 1, 2))
        until("SELECT 1 FROM quarantined_object", 2)
        assert {r["reason"] for r in rows("SELECT reason FROM quarantined_object")} == {
            "not accepted by the filter script"}
        assert len(rows("SELECT 1 FROM instance")) == 1
        # Its start warned that export has no destination: kept under its service name.
        until("SELECT 1 FROM service_error WHERE service = 'anon-serve'", 1)
        messages = {r["message"] for r in rows("SELECT message FROM service_error")}
        assert "no export destination (EXPORT_HOST unset): requests are refused" in messages
    finally:
        serve.stop()
    assert serve.process.returncode == 0
