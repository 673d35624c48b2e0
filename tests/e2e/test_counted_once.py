"""A duplicate changes no count: objects received twice, messages delivered twice and
messages naming another bucket, through the deployed services on real RabbitMQ, S3 and
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from shared.messaging import RabbitBroker
from shared.messaging.topology import ANONYMIZE, Topology
from tests import synth
from tests.pipeline_support import Pipeline, ServiceProcess

pytestmark = pytest.mark.integration


def _metric(process: ServiceProcess, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{process.health_port}/metrics",
                                timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _log_count(process: ServiceProcess, message: str) -> int:
    count = 0
    for line in process.log.read_text(errors="replace").splitlines():
        try:
            if json.loads(line).get("message", "").startswith(message):
                count += 1
        except json.JSONDecodeError:
            continue
    return count


def _wait(condition: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.3)


def test_duplicates_redeliveries_and_foreign_buckets_change_no_count(
    tmp_path: Path, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from services.cli.main import main

    images = tmp_path / "images"
    images.mkdir()
    for n, ds in enumerate(synth.make_ct_series(10)):
        synth.write(ds, images / f"{n:02d}.dcm")
    reports = tmp_path / "reports"
    reports.mkdir()
    synth.write(synth.make_sr(), reports / "sr.dcm")  # refused by the SR switch
    pipeline.start("scp_ingest")
    # Received objects kept (not deleted at once), so that one can be announced again.
    worker = pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="2",
                            INCOMING_RETENTION_DAYS="1")
    for _ in range(2):  # every object received twice
        assert pipeline.storescu(images).returncode == 0
        assert pipeline.storescu(reports).returncode == 0
    _wait(lambda: _log_count(worker, "de-identified") >= 20
          and _log_count(worker, "quarantined") >= 2)
    incoming = sorted(pipeline.keys(pipeline.buckets.incoming))
    deidentified = sorted(pipeline.keys(pipeline.buckets.deidentified))
    assert len(deidentified) == 10

    async def publish() -> None:
        broker = RabbitBroker(pipeline.amqp_url, Topology(pipeline.prefix, 3))
        await broker.connect()
        try:
            # The same message again (as after a lost acknowledgement), and messages that
            # name the de-identified and quarantine buckets.
            await broker.publish(ANONYMIZE, {"bucket": pipeline.buckets.incoming,
                                             "key": incoming[0], "source": "scp"}, "again")
            await broker.publish(ANONYMIZE, {"bucket": pipeline.buckets.deidentified,
                                             "key": deidentified[0]}, "foreign")
            await broker.publish(ANONYMIZE, {"bucket": pipeline.buckets.quarantine,
                                             "key": incoming[0]}, "foreign")
        finally:
            await broker.close()

    asyncio.run(publish())
    _wait(lambda: _log_count(worker, "de-identified") >= 21)
    time.sleep(2)
    assert _metric(worker, "dicom_objects_deidentified_total") == 10
    assert _metric(
        worker,
        'dicom_objects_quarantined_total{reason_code="filtered",stage="deidentify"}') == 1
    for name, value in pipeline.env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["received"] == 11
    assert status["deidentified"] == 10
    assert status["quarantined"] == 1
    assert sorted(pipeline.keys(pipeline.buckets.deidentified)) == deidentified
    assert pipeline.dead_letters() == 0
    assert _log_count(worker, "message refused") == 2
