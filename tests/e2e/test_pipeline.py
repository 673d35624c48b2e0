"""The deployed pipeline on real services: DCMTK's storescu -> scp-ingest -> RabbitMQ ->
anonymizer-worker -> S3 and PostgreSQL."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from tests import synth
from tests.pipeline_support import Pipeline

pytestmark = pytest.mark.integration


def _write_series(folder: Path, count: int, parts: int = 1, patient: int = 0) -> list[Path]:
    folders = [folder / f"part{n}" for n in range(parts)]
    for f in folders:
        f.mkdir(parents=True)
    for n, ds in enumerate(synth.make_ct_series(count, patient_index=patient)):
        synth.write(ds, folders[n % parts] / f"{n:04d}.dcm")
    return folders


def test_500_objects_from_several_associations_arrive_each_exactly_once(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    folders = _write_series(tmp_path / "in", 500, parts=4)
    pipeline.start("scp_ingest")
    pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="4")
    pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="4")
    results: list[subprocess.CompletedProcess[str]] = []
    senders = [threading.Thread(target=lambda f=f: results.append(pipeline.storescu(f)))
               for f in folders]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert all(r.returncode == 0 for r in results), [r.stderr[-500:] for r in results]
    counts = pipeline.wait_for(lambda c: c["deidentified"] >= 500)
    time.sleep(1)  # anything more would be a duplicate
    counts = pipeline.counts()
    assert counts["deidentified"] == counts["unique"] == 500
    assert counts["received"] == 500 and counts["quarantined"] == 0
    assert len(pipeline.keys(pipeline.buckets.deidentified)) == 500
    assert pipeline.dead_letters() == 0


def test_a_worker_killed_mid_run_loses_nothing(tmp_path: Path, pipeline: Pipeline) -> None:
    (folder,) = _write_series(tmp_path / "in", 200)
    pipeline.start("scp_ingest")
    assert pipeline.storescu(folder).returncode == 0
    worker = pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="2")
    pipeline.wait_for(lambda c: c["deidentified"] >= 40)
    worker.kill()
    partial = pipeline.counts()["deidentified"]
    assert partial < 200
    pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="2")
    counts = pipeline.wait_for(lambda c: c["deidentified"] >= 200)
    time.sleep(1)
    counts = pipeline.counts()
    assert counts["deidentified"] == counts["unique"] == 200
    assert len(pipeline.keys(pipeline.buckets.deidentified)) == 200
    assert pipeline.dead_letters() == 0


@pytest.mark.exclusive
def test_broker_restart_mid_run_loses_nothing(tmp_path: Path, pipeline: Pipeline) -> None:
    (folder,) = _write_series(tmp_path / "in", 150)
    pipeline.start("scp_ingest")
    pipeline.start("anonymizer_worker", WORKER_CONCURRENCY="2")
    first = threading.Thread(target=pipeline.storescu, args=(folder,))
    first.start()
    pipeline.wait_for(lambda c: c["received"] >= 20)
    try:
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
        time.sleep(2)
    finally:
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True,
                       timeout=120)
        subprocess.run(["rabbitmqctl", "await_startup"], check=True, capture_output=True,
                       timeout=120)
    first.join()
    # The sender retries what was refused while the broker was down (storescu: send again).
    retry = pipeline.storescu(folder)
    assert retry.returncode == 0, retry.stderr[-800:]
    counts = pipeline.wait_for(lambda c: c["unique"] >= 150, timeout=180)
    time.sleep(1)
    counts = pipeline.counts()
    assert counts["unique"] == 150 and counts["deidentified"] == 150
    for process in pipeline.processes:
        assert process.process.poll() is None, f"{process.name} died"


def test_objects_received_while_storage_is_down_wait_in_the_journal_and_arrive_once(
    tmp_path: Path, pipeline: Pipeline, s3_control: object
) -> None:
    """With the object store down the SCP still answers Success: each object is durable in
    its journal; once the store is back the relay stores and announces each, once."""
    (folder,) = _write_series(tmp_path / "in", 3)
    pipeline.start("scp_ingest", SCP_STORE_TIMEOUT="2")
    journal = pipeline.tmp / "data" / "scp-journal" / "ready"
    s3_control.stop()  # type: ignore[attr-defined]
    try:
        sent = pipeline.storescu(folder, "-v")
        assert sent.returncode == 0, sent.stderr[-800:]
        assert (sent.stdout + sent.stderr).count("Received Store Response (Success)") == 3
        assert len(list(journal.iterdir())) == 3
    finally:
        s3_control.start()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while any(journal.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(journal.iterdir())
    assert len(pipeline.keys(pipeline.buckets.incoming)) == 3
    pipeline.start("anonymizer_worker")
    counts = pipeline.wait_for(lambda c: c["deidentified"] >= 3)
    assert counts["deidentified"] == 3


def test_invalid_and_filtered_objects_are_quarantined_and_services_keep_running(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    from pynetdicom import AE

    scp = pipeline.start("scp_ingest")
    worker = pipeline.start("anonymizer_worker")
    reports = tmp_path / "sr"
    reports.mkdir()
    synth.write(synth.make_sr(), reports / "report.dcm")
    assert pipeline.storescu(reports).returncode == 0
    # An object without a Study Instance UID: refused by the SCP, kept in quarantine.
    broken = synth.make_ct_series(1)[0]
    del broken.StudyInstanceUID
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(broken.SOPClassUID, broken.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", pipeline.scp_port, ae_title="ANONSCP")
    assert assoc.is_established
    status: Dataset = assoc.send_c_store(broken)
    assoc.release()
    assert status.Status == 0xC000
    counts = pipeline.wait_for(lambda c: c["quarantined"] >= 2)
    reasons = sorted(pipeline.quarantine_reasons().values())
    assert reasons[0][0] == "filtered" and "SR switch" in reasons[0][1]
    assert reasons[1] == ("missing-attribute", "StudyInstanceUID is missing or empty")
    assert len(pipeline.keys(pipeline.buckets.quarantine)) == 2
    (good,) = _write_series(tmp_path / "good", 2)
    assert pipeline.storescu(good).returncode == 0
    counts = pipeline.wait_for(lambda c: c["deidentified"] >= 2)
    assert counts["deidentified"] == 2
    assert scp.process.poll() is None and worker.process.poll() is None


def test_anon_import_sends_local_files_into_the_running_system(
    tmp_path: Path, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from services.cli.main import main
    from tests.conftest import SAMPLES

    (folder,) = _write_series(tmp_path / "in", 5)
    (folder / "notes.dcm").write_text("not DICOM at all")
    broken = SAMPLES / "synthetic-broken" / "truncated_in_pixel_data.dcm"
    (folder / "truncated.dcm").write_bytes(broken.read_bytes())
    for name, value in pipeline.env.items():
        monkeypatch.setenv(name, value)
    pipeline.start("anonymizer_worker")
    assert main(["import", str(folder), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "sent:        5" in out and "quarantined: 2" in out
    counts = pipeline.wait_for(lambda c: c["deidentified"] >= 5)
    assert counts["quarantined"] == 2
    codes = sorted(code for code, _ in pipeline.quarantine_reasons().values())
    assert codes == ["not-dicom", "truncated"]


def test_duplicates_are_not_counted_twice_and_nothing_reaches_the_logs(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    (folder,) = _write_series(tmp_path / "in", 20)
    scp = pipeline.start("scp_ingest", LOG_LEVEL="DEBUG")
    worker = pipeline.start("anonymizer_worker", LOG_LEVEL="DEBUG")
    assert pipeline.storescu(folder).returncode == 0
    assert pipeline.storescu(folder).returncode == 0  # the same 20 objects again
    counts = pipeline.wait_for(lambda c: c["received"] >= 40)
    time.sleep(2)
    counts = pipeline.counts()
    assert counts["deidentified"] == counts["unique"] == 20
    assert len(pipeline.keys(pipeline.buckets.deidentified)) == 20
    logs = scp.log.read_bytes() + worker.log.read_bytes()
    assert b'"message": "de-identified"' in logs
    leaked = [s for s in synth.PHI_STRINGS if s in logs]
    assert not leaked


def test_a_message_that_keeps_failing_goes_to_the_dead_letter_queue(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    import asyncio

    from shared.messaging import RabbitBroker
    from shared.messaging.topology import ANONYMIZE

    worker = pipeline.start("anonymizer_worker")

    async def publish_poison() -> None:
        broker = RabbitBroker(pipeline.amqp_url, pipeline.topology)
        await broker.connect()
        try:
            await broker.publish(ANONYMIZE, {"no-key": True}, correlation_id="poison")
        finally:
            await broker.close()

    asyncio.run(publish_poison())
    deadline = time.monotonic() + 60
    while pipeline.dead_letters() < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert pipeline.dead_letters() == 1
    assert worker.process.poll() is None
    (folder,) = _write_series(tmp_path / "in", 2)
    pipeline.start("scp_ingest")
    assert pipeline.storescu(folder).returncode == 0
    assert pipeline.wait_for(lambda c: c["deidentified"] >= 2)["deidentified"] == 2


def test_health_endpoints_report_liveness_readiness_and_metrics(
    tmp_path: Path, pipeline: Pipeline, s3_control: object
) -> None:
    import json
    import urllib.error
    import urllib.request

    scp = pipeline.start("scp_ingest")
    (folder,) = _write_series(tmp_path / "in", 2)
    assert pipeline.storescu(folder).returncode == 0
    base = f"http://127.0.0.1:{scp.health_port}"
    with urllib.request.urlopen(f"{base}/livez", timeout=5) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
        assert json.load(response)["checks"] == ["broker", "database", "receivers", "storage"]
    deadline = time.monotonic() + 15  # counted once relayed from the journal
    while True:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        if 'dicom_objects_received_total{source="scp"} 2.0' in metrics:
            break
        assert time.monotonic() < deadline, metrics[-2000:]
        time.sleep(0.2)
    assert "dicom_scp_journal_entries" in metrics
    s3_control.stop()  # type: ignore[attr-defined]
    try:
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"{base}/readyz", timeout=15)
        assert not_ready.value.code == 503
        assert json.load(not_ready.value)["failing"] == {"storage": "StorageUnavailable"}
    finally:
        s3_control.start()  # type: ignore[attr-defined]
