"""Query/retrieve against a real PACS: Orthanc as the PACS, ``anon serve`` as the system,
the ``anon`` commands as a research coordinator types them.

Orthanc knows our Storage SCP as a C-MOVE destination (``ANONSCP`` at our port), or, in
the interrupted-transfer test, a proxy in front of it that cuts the first transfer short.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from tests import synth
from tests.orthanc import CuttingProxy, Orthanc
from tests.pipeline_support import ServiceProcess
from tests.s3_server import free_port

pytestmark = pytest.mark.integration

SCP_AET = "ANONSCP"


@dataclass(frozen=True)
class PacsStudy:
    patient: int
    uid: str
    date: str
    accession: str
    modality: str
    series: int
    per_series: int

    @property
    def instances(self) -> int:
        return self.series * self.per_series


STUDIES = (
    PacsStudy(0, "1.2.826.0.1.3680043.10.543.7001", "20190314", "ACC-A-0001", "CT", 2, 3),
    PacsStudy(1, "1.2.826.0.1.3680043.10.543.7002", "20200601", "ACC-B-0002", "CT", 1, 4),
    PacsStudy(2, "1.2.826.0.1.3680043.10.543.7003", "20210115", "ACC-C-0003", "MR", 1, 2),
    # A second study of patient 1, and an accession number two studies share.
    PacsStudy(1, "1.2.826.0.1.3680043.10.543.7004", "20210116", "ACC-DUP", "CT", 1, 2),
    PacsStudy(2, "1.2.826.0.1.3680043.10.543.7005", "20210117", "ACC-DUP", "CT", 1, 2),
)


def study_files(study: PacsStudy, folder: Path, extra: int = 0) -> list[Path]:
    """The study's files (``extra`` more instances in a further series)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    series_count = study.series + (1 if extra else 0)
    for number in range(1, series_count + 1):
        count = extra if number > study.series else study.per_series
        for n, ds in enumerate(synth.make_ct_series(
                count, patient_index=study.patient, study_uid=study.uid, series_number=number)):
            ds.StudyDate = study.date
            ds.AccessionNumber = study.accession
            ds.Modality = study.modality
            path = folder / f"{study.uid}-{number}-{n}.dcm"
            synth.write(ds, path)
            paths.append(path)
    return paths


@dataclass
class System:
    serve: ServiceProcess
    data: Path
    env: dict[str, str]
    tmp: Path

    def anon(self, *args: str, check: bool = False, stdin: str | None = None,
             timeout: float = 180) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", *args, "--data-dir", str(self.data)],
            capture_output=True, text=True, env=self.env, timeout=timeout, input=stdin)
        if check:
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done

    def jobs(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(self.anon("jobs", "--json", check=True).stdout)
        return listed

    def status(self) -> dict[str, int]:
        counts: dict[str, int] = json.loads(self.anon("status", "--json", check=True).stdout)
        return counts

    def wait_deidentified(self, count: int, timeout: float = 60) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        counts = self.status()
        while counts["deidentified"] < count and time.monotonic() < deadline:
            time.sleep(0.3)
            counts = self.status()
        return counts


def start_system(tmp: Path, database_url: str, pacs: Orthanc, scp_port: int,
                 **settings: str) -> System:
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "data"
    health = free_port()
    env = {**{k: v for k, v in os.environ.items() if k not in ("AMQP_URL", "S3_ENDPOINT")},
           "DATABASE_URL": database_url, "PACS_HOST": "127.0.0.1",
           "PACS_PORT": str(pacs.dicom_port), "PACS_AE_TITLE": pacs.aet,
           "QR_ARRIVAL_WAIT_SECONDS": "2", "QR_TIMEOUT_SECONDS": "10", **settings}
    log = tmp / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "serve", "--data-dir", str(data), "--port",
         str(scp_port), "--aet", SCP_AET, "--health-port", str(health)],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    serve = ServiceProcess("serve", process, health, log)
    serve.wait_ready(timeout=90)
    return System(serve, data, env, tmp)


@pytest.fixture
def pacs(orthanc_factory: Any, tmp_path: Path) -> Iterator[tuple[Orthanc, int]]:
    """An Orthanc holding :data:`STUDIES`, knowing our SCP (on the returned port)."""
    scp_port = free_port()
    server: Orthanc = orthanc_factory("PACS", modalities={SCP_AET: ("127.0.0.1", scp_port)})
    for study in STUDIES:
        server.upload(study_files(study, tmp_path / "pacs-files"))
    yield server, scp_port


@pytest.fixture
def system(pacs: tuple[Orthanc, int], tmp_path: Path, database_url: str) -> Iterator[System]:
    server, scp_port = pacs
    running = start_system(tmp_path, database_url, server, scp_port)
    try:
        yield running
    finally:
        running.serve.stop()


def query(system: System, *args: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(system.anon("query", *args, "--json",
                                                         check=True).stdout)
    return found


def test_query_with_wildcards_and_date_ranges_returns_exactly_the_matching_studies(
        system: System) -> None:
    every = query(system)
    assert {s["study_uid"] for s in every} == {s.uid for s in STUDIES}
    by_uid = {s["study_uid"]: s for s in every}
    for study in STUDIES:
        found = by_uid[study.uid]
        assert found["series_count"] == study.series
        assert found["instance_count"] == study.instances
        assert found["accession"] == study.accession
        assert found["patient_id"] == synth.phi_for(study.patient).patient_id
        assert study.modality in found["modalities"]
        assert found["already_imported"] is False
    family = synth.phi_for(1).patient_name.split("^")[0]
    assert {s["study_uid"] for s in query(system, "--patient-name", family[:3] + "*")} == {
        s.uid for s in STUDIES if s.patient == 1}
    assert {s["study_uid"] for s in query(system, "--study-date", "20200101-20210115")} == {
        STUDIES[1].uid, STUDIES[2].uid}
    assert {s["study_uid"] for s in query(system, "--study-date", "20210116-")} == {
        STUDIES[3].uid, STUDIES[4].uid}
    assert {s["study_uid"] for s in query(system, "--study-date", "20190314")} == {STUDIES[0].uid}
    assert {s["study_uid"] for s in query(system, "--accession", "ACC-?-000*")} == {
        STUDIES[0].uid, STUDIES[1].uid, STUDIES[2].uid}
    assert {s["study_uid"] for s in query(system, "--modality", "MR")} == {STUDIES[2].uid}
    pid = synth.phi_for(0).patient_id
    assert {s["study_uid"] for s in query(system, "--patient-id", pid)} == {STUDIES[0].uid}
    printed = system.anon("query", "--patient-id", pid, check=True).stdout
    assert STUDIES[0].uid in printed and "1 study" in printed
    bad = system.anon("query", "--study-date", "2021-13-45")
    assert bad.returncode != 0 and "date" in bad.stderr


def test_a_retrieve_brings_every_instance_de_identified_and_marks_the_study_imported(
        system: System) -> None:
    study = STUDIES[0]
    done = system.anon("retrieve", study.uid, "--wait", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "complete" in done.stdout
    (job,) = system.jobs()
    assert job["kind"] == "retrieve" and job["status"] == "complete"
    (item,) = job["items"]
    assert item["expected"] == item["verified"] == study.instances and item["missing"] == 0
    # The job's listing holds no PHI: neither the study UID nor the patient.
    listing = json.dumps(job)
    assert study.uid not in listing and synth.phi_for(0).patient_id not in listing
    counts = system.wait_deidentified(study.instances)
    assert counts["deidentified"] == study.instances and counts["quarantined"] == 0
    marked = {s["study_uid"]: s["already_imported"] for s in query(system)}
    assert marked[study.uid] is True and marked[STUDIES[1].uid] is False
    # Retrieving it again requests nothing: every instance is there.
    again = system.anon("retrieve", study.uid, "--wait", "--no-progress")
    assert again.returncode == 0
    assert system.jobs()[0]["items"][0]["attempts"] == 0


def test_an_interrupted_move_leaves_the_job_incomplete_and_a_re_request_completes_it(
        orthanc_factory: Any, tmp_path: Path, database_url: str) -> None:
    scp_port = free_port()
    proxy = CuttingProxy(("127.0.0.1", scp_port))
    server: Orthanc = orthanc_factory("PACS", modalities={SCP_AET: ("127.0.0.1", proxy.port)})
    study = PacsStudy(0, "1.2.826.0.1.3680043.10.543.7101", "20190314", "ACC-CUT", "CT", 2, 10)
    server.upload(study_files(study, tmp_path / "files"))
    system = start_system(tmp_path, database_url, server, scp_port, QR_RETRIES="0")
    try:
        proxy.cut_after = 60_000  # a few objects get through, then the connection drops
        cut = system.anon("retrieve", study.uid, "--wait", "--no-progress")
        assert cut.returncode == 5, cut.stdout + cut.stderr
        (job,) = system.jobs()
        (item,) = job["items"]
        assert job["status"] == "incomplete" and item["status"] == "incomplete"
        assert 0 < item["missing"] < study.instances
        assert item["verified"] + item["missing"] == study.instances
        assert f"{item['missing']} of {study.instances} instances still missing" in item["message"]
        assert proxy.cuts == 1
        done = system.anon("retrieve", study.uid, "--wait", "--no-progress")
        assert done.returncode == 0, done.stdout + done.stderr
        latest = system.jobs()[0]
        assert latest["status"] == "complete"
        assert latest["items"][0]["verified"] == study.instances
        assert system.wait_deidentified(study.instances)["deidentified"] == study.instances
    finally:
        system.serve.stop()
        proxy.close()


def test_retries_fetch_what_a_first_transfer_missed_within_one_job(
        orthanc_factory: Any, tmp_path: Path, database_url: str) -> None:
    scp_port = free_port()
    proxy = CuttingProxy(("127.0.0.1", scp_port))
    server: Orthanc = orthanc_factory("PACS", modalities={SCP_AET: ("127.0.0.1", proxy.port)})
    study = PacsStudy(3, "1.2.826.0.1.3680043.10.543.7102", "20190314", "ACC-RETRY", "CT", 3, 6)
    server.upload(study_files(study, tmp_path / "files"))
    system = start_system(tmp_path, database_url, server, scp_port, QR_RETRIES="2")
    try:
        proxy.cut_after = 40_000
        done = system.anon("retrieve", study.uid, "--wait", "--no-progress")
        assert done.returncode == 0, done.stdout + done.stderr
        item = system.jobs()[0]["items"][0]
        assert item["verified"] == study.instances and item["attempts"] >= 2
        assert proxy.cuts == 1
    finally:
        system.serve.stop()
        proxy.close()


def test_a_study_that_gains_instances_after_a_retrieve_is_completed_by_the_next(
        system: System, pacs: tuple[Orthanc, int], tmp_path: Path) -> None:
    server, _ = pacs
    study = STUDIES[1]
    assert system.anon("retrieve", study.uid, "--wait", "--no-progress").returncode == 0
    server.upload(study_files(study, tmp_path / "later", extra=3)[-3:])
    done = system.anon("retrieve", study.uid, "--wait", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    item = system.jobs()[0]["items"][0]
    assert item["expected"] == study.instances + 3 and item["verified"] == study.instances + 3
    assert system.wait_deidentified(study.instances + 3)["deidentified"] == study.instances + 3


def test_an_accession_list_does_the_right_thing_for_each_line(system: System,
                                                               tmp_path: Path) -> None:
    listing = tmp_path / "accessions.txt"
    listing.write_text(
        "// research project 42\n"
        "\n"
        f"{STUDIES[0].accession}   // first patient\n"
        f"SI:{STUDIES[2].uid}\n"
        "NO-SUCH-ACC\n"
        f"{STUDIES[0].accession}\n"
        "ACC-DUP\n"
        "   \n")
    done = system.anon("retrieve", "--accessions", str(listing), "--wait", "--no-progress")
    assert done.returncode == 5, done.stdout + done.stderr  # not every line found a study
    assert "line 6: same key as line 3, retrieved once" in done.stdout
    (job,) = system.jobs()
    by_line = {item["line"]: item for item in job["items"]}
    assert set(by_line) == {3, 4, 5, 7}
    assert by_line[3]["status"] == "complete"
    assert by_line[3]["verified"] == STUDIES[0].instances
    assert by_line[4]["status"] == "complete"
    assert by_line[4]["verified"] == STUDIES[2].instances
    assert by_line[5]["status"] == "not-found"
    assert by_line[7]["status"] == "ambiguous" and "2 studies" in by_line[7]["message"]
    assert "line 5: not-found" in done.stdout
    # The same list from standard input.
    again = system.anon("retrieve", "--accessions", "-", "--no-progress",
                        stdin=f"SI:{STUDIES[1].uid}\n")
    assert again.returncode == 0 and "job 2" in again.stdout


def test_a_batch_spreadsheet_gives_one_result_row_per_study_and_can_be_retrieved(
        system: System, tmp_path: Path) -> None:
    requests = tmp_path / "requests.csv"
    with requests.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["PatientID", "StudyDate", "Modality"])
        writer.writerow([synth.phi_for(1).patient_id, "", ""])          # two studies
        writer.writerow(["", "20210115", "MR"])                          # one study
        writer.writerow(["PID-NOBODY", "", ""])                          # none
    results = tmp_path / "results.xlsx"
    done = system.anon("query", "--batch", str(requests), "--output", str(results))
    assert done.returncode == 0, done.stdout + done.stderr
    sheet = openpyxl.load_workbook(results).active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    header, body = rows[0], rows[1:]
    column = {name: n for n, name in enumerate(header)}
    found = [(r[column["Row"]], r[column["Status"]], r[column["StudyInstanceUID"]]) for r in body]
    assert sorted(found, key=str) == sorted([
        (2, "found", STUDIES[1].uid), (2, "found", STUDIES[3].uid),
        (3, "found", STUDIES[2].uid), (4, "not found", None),
    ], key=str)
    retrieved = system.anon("retrieve", "--batch", str(results), "--wait", "--no-progress")
    assert retrieved.returncode == 0, retrieved.stdout + retrieved.stderr
    (job,) = system.jobs()
    assert job["status"] == "complete" and len(job["items"]) == 3
    expected = STUDIES[1].instances + STUDIES[3].instances + STUDIES[2].instances
    assert sum(item["verified"] for item in job["items"]) == expected


def test_a_request_spreadsheet_is_retrieved_row_by_row(system: System, tmp_path: Path) -> None:
    requests = tmp_path / "requests.csv"
    requests.write_text(f"AccessionNumber\n{STUDIES[2].accession}\nNOPE\n")
    done = system.anon("retrieve", "--batch", str(requests), "--wait", "--no-progress")
    assert done.returncode == 5
    (job,) = system.jobs()
    statuses = {item["line"]: item["status"] for item in job["items"]}
    assert statuses == {2: "complete", 3: "not-found"}


def test_c_get_retrieves_a_study_from_a_pacs_that_cannot_reach_us(
        orthanc_factory: Any, tmp_path: Path, database_url: str) -> None:
    server: Orthanc = orthanc_factory("PACS")  # knows no destination at all
    study = STUDIES[0]
    server.upload(study_files(study, tmp_path / "files"))
    system = start_system(tmp_path, database_url, server, free_port(), QR_RETRIEVE="get")
    try:
        done = system.anon("retrieve", study.uid, "--wait", "--no-progress")
        assert done.returncode == 0, done.stdout + done.stderr
        assert system.wait_deidentified(study.instances)["deidentified"] == study.instances
    finally:
        system.serve.stop()


def test_pacs_failures_are_explained_and_the_system_keeps_running(
        orthanc_factory: Any, tmp_path: Path, database_url: str) -> None:
    # A PACS that checks its called AE title and does not know our SCP as a destination.
    server: Orthanc = orthanc_factory("PACS", check_called_aet=True)
    study = STUDIES[0]
    server.upload(study_files(study, tmp_path / "files"))
    system = start_system(tmp_path, database_url, server, free_port(), QR_RETRIES="0")
    phi = synth.phi_for(0)
    try:
        unknown = system.anon("retrieve", study.uid, "--wait", "--no-progress")
        assert unknown.returncode == 5
        item = system.jobs()[0]["items"][0]
        assert item["status"] in ("incomplete", "failed")
        assert SCP_AET in item["message"]  # it names the destination the PACS must know
        assert item["missing"] == study.instances
        # A wrong called AE title.
        system.serve.stop()
        system = start_system(tmp_path / "wrong", database_url, server, free_port(),
                              PACS_AE_TITLE="NOTPACS")
        refused = system.anon("query")
        assert refused.returncode == 1 and "called AE title" in refused.stderr
        assert phi.patient_name not in refused.stderr + refused.stdout
        # The PACS down.
        server.stop(kill=True)
        down = system.anon("query")
        assert down.returncode == 1 and "did not answer" in down.stderr
        failed = system.anon("retrieve", study.uid, "--wait", "--no-progress")
        assert failed.returncode == 5
        job = system.jobs()[0]
        assert job["status"] == "failed" and "did not answer" in job["items"][0]["message"]
        # Back up: the same running system answers again.
        server.start()
        assert system.anon("query").returncode == 1  # still the wrong called AE title
        assert system.serve.process.poll() is None
    finally:
        system.serve.stop()


def test_commands_without_a_running_system_say_how_to_start_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("AMQP_URL", "DATABASE_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "query", "--data-dir", str(tmp_path / "none")],
        capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 4 and "anon serve --data-dir" in done.stderr
