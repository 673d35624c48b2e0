"""The index API against a running ``anon serve``: Orthanc as PACS and as destination,
studies with planted PHI retrieved and exported through the API itself.

One system serves the whole module (starting it and retrieving takes most of a minute);
the tests that change it (tokens, configuration, the fuzzing at the end) leave it usable.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from shared.config import Settings
from shared.runtime import topology_from
from tests import synth
from tests.api_support import Answer, Api, check_answer, multipart
from tests.conftest import fresh_database
from tests.e2e.test_retrieve import SCP_AET, STUDIES, System, start_system, study_files
from tests.messaging_support import delete_topology
from tests.orthanc import Orthanc, orthanc_available
from tests.s3_server import S3Endpoint, free_port

pytestmark = pytest.mark.integration

RSNA_COLUMNS = ["ANON-PatientName", "ANON-PatientID", "PHI-PatientName", "PHI-PatientID",
                "DateOffset", "ANON-StudyDate", "PHI-StudyDate", "ANON-Accession",
                "PHI-Accession", "ANON-StudyInstanceUID", "PHI-StudyInstanceUID"]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
RETRIEVED = STUDIES[:3]  # patients 0, 1 and 2, one study each


@dataclass
class ApiSystem:
    system: System
    api: Api
    tokens: dict[str, str]
    pacs: Orthanc
    destination: Orthanc
    database_url: str

    @property
    def document(self) -> dict[str, Any]:
        answer = self.api.get("/openapi.json")
        assert answer.status == 200
        document: dict[str, Any] = answer.json()
        return document

    def token(self, role: str, name: str) -> str:
        done = self.system.anon("token", "create", "--role", role, "--name", name, check=True)
        return done.stdout.strip()

    def wait_job(self, job: int, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found: dict[str, Any] = self.api.get(f"/api/v1/jobs/{job}",
                                                 self.tokens["operator"]).json()
            if found["status"] in ("complete", "incomplete", "failed"):
                return found
            assert time.monotonic() < deadline, found
            time.sleep(0.3)


def original_values() -> list[str]:
    """Every original value planted in the PACS's studies, as text."""
    values: set[str] = set()
    for study in STUDIES:
        values |= {study.uid, study.accession}
        values |= {s.decode("utf-8", "replace") for s in synth.phi_strings(
            synth.phi_for(study.patient))}
    # Short values would match by chance (a date inside a UID); the rest are distinctive.
    return sorted(v for v in values if len(v) >= 6)


def assert_no_original_value(answer: Answer, where: str) -> None:
    text = answer.text()
    found = [value for value in original_values() if value in text]
    assert not found, f"{where} ({answer.status}) shows original values: {found[:5]}"


@pytest.fixture(scope="module")
def module_database(admin_url: str) -> Iterator[str]:
    with fresh_database(admin_url) as url:
        yield url


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, module_database: str
            ) -> Iterator[ApiSystem]:
    if not orthanc_available():
        pytest.fail("Orthanc is not installed: run `make system-packages` (Debian: orthanc)")
    tmp = tmp_path_factory.mktemp("index-api")
    scp_port = free_port()
    pacs = Orthanc(tmp / "pacs", "PACS", modalities={SCP_AET: ("127.0.0.1", scp_port)}).start()
    destination = Orthanc(tmp / "destination", "RESEARCH").start()
    try:
        for study in STUDIES:
            pacs.upload(study_files(study, tmp / "pacs-files"))
        system = start_system(
            tmp / "system", module_database, pacs, scp_port,
            EXPORT_HOST="127.0.0.1", EXPORT_PORT=str(destination.dicom_port),
            EXPORT_CALLED_AE="RESEARCH", EXPORT_QUIET_SECONDS="0",
            API_MAX_UPLOAD_BYTES="1048576", API_PHI_BURST="40", API_PHI_READS_PER_MINUTE="60")
        try:
            api = Api(f"http://127.0.0.1:{system.serve.health_port}")
            running = ApiSystem(system, api, {}, pacs, destination, module_database)
            for role in ("operator", "phi-reader", "admin"):
                running.tokens[role] = running.token(role, f"test-{role}")
            operator = running.tokens["operator"]
            refs = []
            for study in RETRIEVED:
                found = api.call("POST", "/api/v1/query", operator,
                                 json_body={"accession": study.accession}).json()["studies"]
                assert len(found) == 1, found
                refs.append(found[0]["ref"])
            started = api.call("POST", "/api/v1/retrieves", operator, json_body={"refs": refs})
            assert started.status == 202, started.body
            job = running.wait_job(started.json()["job"])
            assert job["status"] == "complete", job
            system.wait_deidentified(sum(s.instances for s in RETRIEVED))
            # One object refused (burned-in annotation), with its planted PHI, for the
            # quarantine's answers.
            [refused] = synth.make_ct_series(1, patient_index=0, study_uid=STUDIES[0].uid,
                                             series_number=9)
            refused.BurnedInAnnotation = "YES"
            synth.write(refused, tmp / "burned-in.dcm")
            sent = subprocess.run(
                [sys.executable, "-m", "services.cli", "import", str(tmp / "burned-in.dcm"),
                 "--port", str(scp_port), "--aet", SCP_AET, "--no-progress"],
                env=system.env, capture_output=True, text=True, timeout=60)
            assert sent.returncode == 0, sent.stderr[-2000:]
            deadline = time.monotonic() + 60
            while system.status()["quarantined"] < 1:
                assert time.monotonic() < deadline, system.status()
                time.sleep(0.3)
            yield running
        finally:
            system.serve.stop()
    finally:
        pacs.stop(kill=True)
        destination.stop(kill=True)


def first_patient(running: ApiSystem) -> dict[str, Any]:
    listed = running.api.get("/api/v1/patients", running.tokens["operator"]).json()["items"]
    assert listed
    patient: dict[str, Any] = listed[0]
    return patient


def test_without_a_token_every_api_operation_is_refused_and_health_is_open(
    running: ApiSystem,
) -> None:
    document = running.document
    for template, operations in document["paths"].items():
        path = (template.replace("{pseudo_patient_id}", "x").replace("{kind}", "script")
                .replace("{job}", "1").replace("{day}", "2026-01-01").replace("{name}", "x")
                .replace("{pseudo_study_uid}", "1.2").replace("{pseudo_sop_instance_uid}", "1.2")
                .replace("{frame}", "1"))
        for method in operations:
            answer = running.api.call(method.upper(), path)
            if template.startswith("/api/"):
                assert answer.status == 401, (method, template, answer.status)
                assert answer.content_type == "application/problem+json"
                assert answer.headers.get("www-authenticate", "").startswith("Bearer")
            else:
                assert answer.status == 200, (method, template, answer.status)
            check_answer(document, template, method, answer)
    bogus = running.api.get("/api/v1/status", "anon_not-a-token")
    assert bogus.status == 401
    assert bogus.json()["detail"] == "the token is unknown or revoked"


def calls(running: ApiSystem) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    """(operation template, method, concrete path, role, request options) for every
    operation of the document, with real identifiers of the running system."""
    patient = first_patient(running)["pseudo_patient_id"]
    studies = running.api.get("/api/v1/studies", running.tokens["operator"],
                              patient=patient).json()["items"]
    study = studies[0]["pseudo_study_uid"]
    instance = running.api.get(f"/api/v1/studies/{study}/instances",
                               running.tokens["operator"]).json()["items"][0]
    uid = instance["pseudo_sop_instance_uid"]
    job = running.api.get("/api/v1/jobs", running.tokens["operator"]).json()["items"][0]["id"]
    held = running.api.get("/api/v1/quarantine", running.tokens["operator"]).json()["items"]
    quarantined = held[0]["key"] if held else "0" * 64 + ".dcm"  # released by an earlier test
    filter_text = 'Modality.equals("CT") + Modality.equals("MR")'
    csv_body = f"AccessionNumber\n{STUDIES[3].accession}\n".encode()
    upload, upload_type = multipart("file", "keys.txt", f"{STUDIES[4].accession}\n".encode(),
                                    "text/plain")
    return [
        ("/livez", "get", "/livez", "operator", {}),
        ("/readyz", "get", "/readyz", "operator", {}),
        ("/metrics", "get", "/metrics", "operator", {}),
        ("/openapi.json", "get", "/openapi.json", "operator", {}),
        ("/api/v1/session", "get", "/api/v1/session", "operator", {}),
        ("/api/v1/patients", "get", "/api/v1/patients", "phi-reader",
         {"query": {"phi": "true", "page_size": "2"}}),
        ("/api/v1/patients/{pseudo_patient_id}", "get", f"/api/v1/patients/{patient}",
         "operator", {}),
        ("/api/v1/patients/{pseudo_patient_id}/original", "get",
         f"/api/v1/patients/{patient}/original", "phi-reader", {}),
        ("/api/v1/studies", "get", "/api/v1/studies", "operator",
         {"query": {"study_date_from": "19000101", "exported": "false"}}),
        ("/api/v1/studies/{pseudo_study_uid}/instances", "get",
         f"/api/v1/studies/{study}/instances", "operator", {}),
        ("/api/v1/index.xlsx", "get", "/api/v1/index.xlsx", "operator", {}),
        ("/api/v1/rt-tracking", "get", "/api/v1/rt-tracking", "operator", {}),
        ("/api/v1/rt-tracking/{day}", "get", "/api/v1/rt-tracking/2026-01-01", "phi-reader",
         {}),
        ("/api/v1/status", "get", "/api/v1/status", "operator", {}),
        ("/api/v1/rt-sets", "get", "/api/v1/rt-sets", "operator", {}),
        ("/api/v1/jobs", "get", "/api/v1/jobs", "operator", {"query": {"kind": "retrieve"}}),
        ("/api/v1/jobs/{job}", "get", f"/api/v1/jobs/{job}", "operator", {}),
        ("/api/v1/quarantine", "get", "/api/v1/quarantine", "operator", {}),
        ("/api/v1/quarantine/release", "post", "/api/v1/quarantine/release", "admin",
         {"json_body": {"key": quarantined}}),
        ("/api/v1/quarantine/purge", "post", "/api/v1/quarantine/purge", "admin",
         {"json_body": {"older_than_days": 3650}}),
        ("/api/v1/log", "get", "/api/v1/log", "operator", {}),
        ("/api/v1/query", "post", "/api/v1/query", "phi-reader",
         {"query": {"phi": "true"}, "json_body": {"modality": "CT"}}),
        ("/api/v1/retrieves", "post", "/api/v1/retrieves", "operator",
         {"json_body": {"accessions": f"// already here\n{STUDIES[0].accession}\n"}}),
        ("/api/v1/retrieves/accession-list", "post", "/api/v1/retrieves/accession-list",
         "operator", {"data": upload, "content_type": upload_type}),
        ("/api/v1/retrieves/batch", "post", "/api/v1/retrieves/batch", "operator",
         {"data": csv_body, "content_type": "text/csv"}),
        ("/api/v1/exports", "post", "/api/v1/exports", "operator",
         {"json_body": {"patients": [patient], "now": True}}),
        ("/api/v1/export/enabled", "get", "/api/v1/export/enabled", "operator", {}),
        ("/api/v1/export/enabled", "put", "/api/v1/export/enabled", "operator",
         {"json_body": {"enabled": True}}),
        ("/api/v1/instances/{pseudo_sop_instance_uid}/elements", "get",
         f"/api/v1/instances/{uid}/elements", "operator", {}),
        ("/api/v1/instances/{pseudo_sop_instance_uid}/frames/{frame}", "get",
         f"/api/v1/instances/{uid}/frames/1", "operator",
         {"query": {"center": "40", "width": "400"}}),
        ("/api/v1/config/{kind}", "get", "/api/v1/config/filter", "admin", {}),
        ("/api/v1/config/{kind}", "put", "/api/v1/config/filter", "admin",
         {"data": filter_text.encode(), "content_type": "text/plain"}),
        ("/api/v1/config/{kind}/check", "post", "/api/v1/config/filter/check", "admin",
         {"data": filter_text.encode(), "content_type": "text/plain"}),
        ("/api/v1/config/{kind}/history", "get", "/api/v1/config/filter/history", "admin", {}),
        ("/api/v1/config/{kind}", "delete", "/api/v1/config/filter", "admin", {}),
        ("/api/v1/site", "get", "/api/v1/site", "operator", {}),
        ("/api/v1/audit", "get", "/api/v1/audit", "admin", {"query": {"limit": "5"}}),
        ("/api/v1/tokens", "get", "/api/v1/tokens", "admin", {}),
        ("/api/v1/tokens", "post", "/api/v1/tokens", "admin",
         {"json_body": {"name": "walked", "role": "operator"}}),
        ("/api/v1/tokens/{name}", "delete", "/api/v1/tokens/walked", "admin", {}),
    ]


def test_every_operation_of_the_document_answers_as_the_document_says(
    running: ApiSystem,
) -> None:
    document = running.document
    planned = calls(running)
    documented = {(t, m) for t, ops in document["paths"].items() for m in ops}
    assert {(t, m) for t, m, *_ in planned} == documented
    answers: dict[tuple[str, str], Answer] = {}
    for template, method, path, role, options in planned:
        answer = running.api.call(method.upper(), path, running.tokens[role], **options)
        assert answer.status < 500, (method, path, answer.status, answer.body[:300])
        check_answer(document, template, method, answer)
        answers[(template, method)] = answer
    ok = {key: a.status for key, a in answers.items() if a.status >= 300}
    # Only this is expected to refuse: no RT tracking rows that day.
    assert set(ok) == {("/api/v1/rt-tracking/{day}", "get")}, ok
    assert answers[("/api/v1/instances/{pseudo_sop_instance_uid}/frames/{frame}", "get")
                   ].body[:8] == b"\x89PNG\r\n\x1a\n"
    for started in ("/api/v1/retrieves", "/api/v1/exports", "/api/v1/retrieves/batch"):
        body = answers[(started, "post")].json()
        assert answers[(started, "post")].headers["location"] == body["url"]
        job = running.wait_job(body["job"])
        assert job["status"] == "complete", (started, json.dumps(job["items"]))


def test_an_operator_sees_no_original_value_in_any_answer(running: ApiSystem) -> None:
    operator = running.tokens["operator"]
    planned = calls(running)
    for template, method, path, _role, options in planned:
        if method != "get" or "{kind}" in template or template in ("/api/v1/audit",
                                                                    "/api/v1/tokens"):
            continue
        answer = running.api.call("GET", path, operator, **options)
        assert_no_original_value(answer, f"GET {path}")
    patient = first_patient(running)["pseudo_patient_id"]
    refusals = [
        running.api.get(f"/api/v1/patients/{patient}/original", operator),
        running.api.get("/api/v1/patients", operator, phi="true"),
        running.api.get("/api/v1/studies", operator, phi="true"),
        running.api.get("/api/v1/index.xlsx", operator, phi="true"),
        running.api.get("/api/v1/patients/PID-7734-QX", operator),
        running.api.call("POST", "/api/v1/query", operator, query={"phi": "true"},
                         json_body={"patient_id": synth.phi_for(0).patient_id}),
        running.api.call("POST", "/api/v1/retrieves", operator,
                         json_body={"refs": ["nonexistent"]}),
    ]
    assert [a.status for a in refusals] == [403, 403, 403, 403, 404, 403, 400]
    for answer in refusals:
        assert answer.content_type == "application/problem+json"
        assert_no_original_value(answer, "a refusal")
    # A query by an original value answers with references, not the values.
    for study in STUDIES:
        found = running.api.call("POST", "/api/v1/query", operator,
                                 json_body={"patient_id": synth.phi_for(study.patient).patient_id})
        assert found.status == 200 and found.json()["studies"]
        assert_no_original_value(found, "a query")
    imported = running.api.call("POST", "/api/v1/query", operator,
                                json_body={"accession": RETRIEVED[0].accession}).json()
    assert imported["studies"][0]["already_imported"] is True
    assert imported["studies"][0]["pseudo_patient_id"]
    workbook = openpyxl.load_workbook(
        io.BytesIO(running.api.get("/api/v1/index.xlsx", operator).body), read_only=True)
    rows = list(workbook.worksheets[0].iter_rows(values_only=True))
    phi_columns = [i for i, name in enumerate(rows[0]) if name and (
        str(name).startswith("PHI-") or name == "DateOffset")]
    assert all(row[i] in (None, "") for row in rows[1:] for i in phi_columns)


def test_a_phi_reader_looks_up_a_pseudonym_and_the_read_is_audited(
    running: ApiSystem,
) -> None:
    reader = running.tokens["phi-reader"]
    patients = running.api.get("/api/v1/patients", reader, phi="true").json()["items"]
    names = {p["original"]["patient_name"]: p["pseudo_patient_id"] for p in patients}
    expected = synth.phi_for(RETRIEVED[1].patient).patient_name
    pseudonym = names[expected]
    found = running.api.get(f"/api/v1/patients/{pseudonym}/original", reader)
    assert found.status == 200
    identity = found.json()
    assert identity["original_patient_name"] == expected
    assert identity["original_patient_id"] == synth.phi_for(RETRIEVED[1].patient).patient_id
    assert RETRIEVED[1].uid in [s["original_study_uid"] for s in identity["studies"]]
    trail = running.api.get("/api/v1/audit", running.tokens["admin"], actor="test-phi-reader",
                            limit="20").json()["items"]
    lookups = [e for e in trail if e["action"] == "patient.phi" and e["target"] == pseudonym]
    assert lookups and lookups[0]["outcome"] == "ok" and lookups[0]["status"] == 200
    assert lookups[0]["client"] == "127.0.0.1" and lookups[0]["role"] == "phi-reader"
    cli = running.system.anon("audit", "--json", "--actor", "test-phi-reader", check=True)
    assert any(json.loads(line)["target"] == pseudonym for line in cli.stdout.splitlines())
    # The trail holds no original value, so an admin may read it.
    assert_no_original_value(running.api.get("/api/v1/audit", running.tokens["admin"],
                                             limit="1000"), "the audit trail")
    # An operator who asks is refused, and the refusal is audited too.
    refused = running.api.get(f"/api/v1/patients/{pseudonym}/original",
                              running.tokens["operator"])
    assert refused.status == 403
    denied = running.api.get("/api/v1/audit", running.tokens["admin"],
                             actor="test-operator").json()["items"]
    assert denied[0]["action"] == "patient.phi" and denied[0]["outcome"] == "denied"
    unknown = running.api.get("/api/v1/patients/999999-999999/original", reader)
    assert unknown.status == 404


def test_a_revoked_token_is_refused_at_once(running: ApiSystem) -> None:
    token = running.token("operator", "short-lived")
    assert running.api.get("/api/v1/status", token).status == 200
    listed = running.system.anon("token", "list", "--json", check=True).stdout
    assert token not in listed and "short-lived" in listed
    running.system.anon("token", "revoke", "short-lived", check=True)
    answer = running.api.get("/api/v1/status", token)
    assert answer.status == 401
    assert answer.json()["detail"] == "the token is unknown or revoked"


def test_phi_reads_beyond_the_rate_limit_are_refused_and_audited(running: ApiSystem) -> None:
    token = running.token("phi-reader", "greedy")
    patient = first_patient(running)["pseudo_patient_id"]
    statuses = [running.api.get(f"/api/v1/patients/{patient}/original", token).status
                for _ in range(50)]
    assert statuses[:40] == [200] * 40  # the burst (API_PHI_BURST=40)
    assert statuses.count(429) >= 8
    refused = running.api.get(f"/api/v1/patients/{patient}/original", token)
    assert refused.status == 429 and int(refused.headers["retry-after"]) >= 1
    trail = running.api.get("/api/v1/audit", running.tokens["admin"], actor="greedy",
                            limit="100").json()["items"]
    assert sum(e["outcome"] == "rate-limited" for e in trail) == statuses.count(429) + 1
    assert sum(e["outcome"] == "ok" for e in trail) == statuses.count(200)
    metrics = running.api.get("/metrics").body.decode()
    assert 'api_phi_reads_total{outcome="rate-limited"}' in metrics
    assert 'route="/api/v1/patients/{pseudo_patient_id}/original"' in metrics
    assert patient not in metrics  # labels are route templates, never identifiers
    # Another token is not slowed down by this one.
    assert running.api.get(f"/api/v1/patients/{patient}/original",
                           running.tokens["phi-reader"]).status == 200


def test_bad_input_gets_a_problem_document_never_a_server_error(running: ApiSystem) -> None:
    operator, admin = running.tokens["operator"], running.tokens["admin"]
    api = running.api
    big, big_type = multipart("file", "big.csv", b"AccessionNumber\n" + b"A\n" * 600_000,
                              "text/csv")
    cases: list[tuple[Answer, int]] = [
        (api.get("/api/v1/patients", operator, page="0"), 400),
        (api.get("/api/v1/patients", operator, page_size="x"), 400),
        (api.get("/api/v1/studies", operator, study_date_from="20191350"), 400),
        (api.get("/api/v1/jobs/123456789"), 401),
        (api.get("/api/v1/jobs/123456789", operator), 404),
        (api.get("/api/v1/jobs/abc", operator), 400),
        (api.get("/api/v1/instances/1.2.3/elements", operator), 404),
        (api.get(f"/api/v1/instances/{STUDIES[0].uid}/elements", operator), 404),
        (api.get("/api/v1/instances/1.2.3/frames/0", operator), 400),
        (api.get("/api/v1/nothing-here", operator), 404),
        (api.call("DELETE", "/api/v1/status", operator), 405),
        (api.call("POST", "/api/v1/query", operator, data=b"patient_id=x",
                  content_type="application/x-www-form-urlencoded"), 415),
        (api.call("POST", "/api/v1/query", operator, data=b"{not json",
                  content_type="application/json"), 400),
        (api.call("POST", "/api/v1/query", operator, json_body=["a list"]), 400),
        (api.call("POST", "/api/v1/query", operator, json_body={"patient_sex": "F"}), 400),
        (api.call("POST", "/api/v1/exports", operator, json_body={"patients": "x"}), 400),
        (api.call("POST", "/api/v1/retrieves/batch", operator, data=b"\x00\x01",
                  content_type="image/png"), 415),
        (api.call("POST", "/api/v1/retrieves/batch", operator, data=big,
                  content_type=big_type), 413),
        (api.call("POST", "/api/v1/retrieves/batch", operator, data=b"nothing,useful\n1,2\n",
                  content_type="text/csv"), 400),
        (api.call("POST", "/api/v1/retrieves/accession-list", operator, data=b"",
                  content_type="text/plain"), 400),
        (api.call("PUT", "/api/v1/config/script", admin, data=b"x",
                  content_type="application/json"), 415),
        (api.call("PUT", "/api/v1/config/script", operator, data=b"x",
                  content_type="text/plain"), 403),
        (api.call("POST", "/api/v1/tokens", admin, json_body={"name": "no spaces please",
                                                               "role": "operator"}), 400),
        (api.call("POST", "/api/v1/tokens", admin, json_body={"name": "test-operator",
                                                               "role": "operator"}), 409),
    ]
    document = running.document
    for answer, expected in cases:
        assert answer.status == expected, (expected, answer.status, answer.body[:200])
        assert answer.content_type == "application/problem+json", answer.headers
        problem = answer.json()
        assert problem["status"] == expected and problem["title"] and problem["detail"]
        assert "Traceback" not in problem["detail"]
        assert_no_original_value(answer, "a problem")
    check_answer(document, "/api/v1/jobs/{job}", "get", cases[4][0])


def test_a_script_is_validated_before_it_replaces_the_active_one(running: ApiSystem) -> None:
    admin = running.tokens["admin"]
    before = running.api.get("/api/v1/config/filter", admin).json()
    invalid = running.api.call("PUT", "/api/v1/config/filter", admin,
                               data=b'Modality.equals("CT")\n+ Modality.sparkles("MR")\n',
                               content_type="text/plain")
    assert invalid.status == 422
    checked = running.api.call("POST", "/api/v1/config/filter/check", admin,
                               data=b'Modality.equals("CT")\n+ Modality.sparkles("MR")\n',
                               content_type="text/plain")
    assert checked.status == 422 and checked.json()["line"] == 2
    problem = invalid.json()
    assert problem["line"] == 2 and problem["reason"]
    assert running.api.get("/api/v1/config/filter", admin).json() == before
    trail = running.api.get("/api/v1/audit", admin, actor="test-admin", limit="5").json()
    assert trail["items"][1]["action"] == "config.filter.replace"
    assert trail["items"][1]["outcome"] == "invalid"
    valid = running.api.call("PUT", "/api/v1/config/filter", admin,
                             data=b'!Modality.equals("SR")', content_type="text/plain")
    assert valid.status == 200 and valid.json()["source"] == "index"
    assert running.api.get("/api/v1/config/filter", admin).json()["text"] == (
        '!Modality.equals("SR")')
    reset = running.api.call("DELETE", "/api/v1/config/filter", admin)
    assert reset.status == 200 and reset.json()["source"] != "index"


def test_the_workbook_has_the_rsna_columns_for_every_study(running: ApiSystem) -> None:
    reader = running.tokens["phi-reader"]
    answer = running.api.get("/api/v1/index.xlsx", reader, phi="true")
    assert answer.status == 200 and answer.content_type == XLSX
    workbook = openpyxl.load_workbook(io.BytesIO(answer.body), read_only=True)
    rows = list(workbook.worksheets[0].iter_rows(values_only=True))
    header = list(rows[0])
    assert header[:len(RSNA_COLUMNS)] == RSNA_COLUMNS
    assert {"Series", "Instances", "ExportDate"} <= set(header)
    by_uid = {row[header.index("PHI-StudyInstanceUID")]: dict(zip(header, row, strict=False))
              for row in rows[1:]}
    studies = running.api.get("/api/v1/studies", reader, phi="true").json()["items"]
    assert set(by_uid) == {s["original"]["study_uid"] for s in studies}
    for study in RETRIEVED:
        row = by_uid[study.uid]
        assert row["PHI-PatientName"] == synth.phi_for(study.patient).patient_name
        assert row["PHI-Accession"] == study.accession
        assert str(row["PHI-StudyDate"]) == study.date
        assert int(row["Instances"]) == study.instances
        assert int(row["Series"]) == study.series


def test_the_index_api_runs_as_its_own_service(
    running: ApiSystem, tmp_path: Path, amqp_url: str, s3_endpoint: S3Endpoint,
) -> None:
    """``index-api`` alone on the same index (deployed: RabbitMQ and S3 configured): the
    same answers; health and metrics on its port; commands need the other services."""
    port = free_port()
    env = {**running.system.env, "API_PORT": str(port), "AMQP_URL": amqp_url,
           "S3_ENDPOINT": s3_endpoint.endpoint, "S3_ACCESS_KEY": s3_endpoint.access_key,
           "S3_SECRET_KEY": s3_endpoint.secret_key,
           "S3_SECURE": "true" if s3_endpoint.secure else "false",
           "QUEUE_PREFIX": f"api-{uuid.uuid4().hex[:8]}"}
    log = tmp_path / "index-api.log"
    process = subprocess.Popen([sys.executable, "-m", "services.index_api"], env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        api = Api(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            try:
                if api.get("/readyz").status == 200:
                    break
            except OSError:  # not listening yet
                pass
            time.sleep(0.3)
        operator = running.tokens["operator"]
        assert api.get("/api/v1/status", operator).json()["deidentified"] == (
            running.api.get("/api/v1/status", operator).json()["deidentified"])
        assert api.get("/api/v1/status").status == 401
        assert b"# HELP" in api.get("/metrics").body
        no_fetcher = api.call("POST", "/api/v1/query", operator, json_body={"modality": "CT"})
        assert no_fetcher.status == 503 and "qr-fetcher" in no_fetcher.json()["detail"]
    finally:
        process.terminate()
        process.wait(timeout=20)
        # The queues the service declared, with its settings (they must match to be deleted).
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            topology = topology_from(Settings())
        asyncio.run(delete_topology(amqp_url, topology))


def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(
    running: ApiSystem, tmp_path: Path,
) -> None:
    """Generated requests for every operation, with an admin token: no 5xx, and every
    answer's status, content type, headers and body as the document says. (Revoking tokens
    is left out: the fuzzer would revoke the token it runs with, from the token list.)"""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("schemathesis")), "run",
         f"{running.api.base}/openapi.json",
         "--header", f"Authorization: Bearer {running.tokens['admin']}",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
         "response_schema_conformance,response_headers_conformance,negative_data_rejection",
         "--phases", "coverage,fuzzing", "--max-examples", "25", "--max-time", "45",
         "--exclude-operation-id", "revokeToken", "--seed", "20261201", "--warnings", "off",
         "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=400, cwd=tmp_path)
    failures = done.stdout[done.stdout.find("FAILURES"):] if "FAILURES" in done.stdout else ""
    assert done.returncode == 0, (failures or done.stdout)[:12000]
