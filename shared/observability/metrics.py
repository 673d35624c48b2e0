"""Prometheus metrics. Labels hold service names and reason codes only, never PHI."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()

RECEIVED = Counter(
    "dicom_objects_received_total", "Objects received (C-STORE or import)",
    ["source"], registry=REGISTRY,
)
RECEIVE_FAILURES = Counter(
    "dicom_receive_failures_total", "C-STORE requests answered with a failure status",
    ["reason"], registry=REGISTRY,
)
DEIDENTIFIED = Counter(
    "dicom_objects_deidentified_total", "Objects de-identified and stored", registry=REGISTRY,
)
QUARANTINED = Counter(
    "dicom_objects_quarantined_total", "Objects refused, by stage and reason code",
    ["stage", "reason_code"], registry=REGISTRY,
)
DEIDENTIFY_SECONDS = Histogram(
    "dicom_deidentify_seconds", "Time to de-identify one object (fetch, engine, store, index)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=REGISTRY,
)
RT_SET_CHECKS = Counter(
    "dicom_set_checks_total",
    "Set checks by rt-relinker (one per arrival), by kind and resulting status",
    ["kind", "status"], registry=REGISTRY,
)
JOURNAL_ENTRIES = Gauge(
    "dicom_scp_journal_entries", "Objects answered Success and not yet relayed from the "
    "Storage SCP's journal to the object store and the broker", registry=REGISTRY,
)
RECEIVE_SECONDS = Histogram(
    "dicom_receive_seconds", "Time to store and announce one received object",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0), registry=REGISTRY,
)

RETRIEVES = Counter(
    "dicom_retrieve_studies_total", "Studies retrieved from the PACS, by outcome",
    ["outcome"], registry=REGISTRY,
)
RETRIEVE_INSTANCES = Counter(
    "dicom_retrieve_instances_verified_total",
    "Instances of retrieved studies verified as arrived", registry=REGISTRY,
)
RETRIEVE_REQUESTS = Counter(
    "dicom_retrieve_requests_total", "C-MOVE or C-GET requests sent to the PACS, by level",
    ["method", "level"], registry=REGISTRY,
)
RETRIEVE_SECONDS = Histogram(
    "dicom_retrieve_seconds", "Time to retrieve and verify one study",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600), registry=REGISTRY,
)
QUERIES = Counter(
    "dicom_retrieve_queries_total", "C-FIND queries sent to the PACS, by outcome",
    ["outcome"], registry=REGISTRY,
)
EXPORTED = Counter(
    "dicom_export_instances_total", "Instances sent to the export destination, by outcome",
    ["outcome"], registry=REGISTRY,
)
EXPORT_PATIENTS = Counter(
    "dicom_export_patients_total", "Patients whose export finished, by outcome",
    ["outcome"], registry=REGISTRY,
)
EXPORT_SECONDS = Histogram(
    "dicom_export_seconds", "Time to export one patient",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900), registry=REGISTRY,
)
API_REQUESTS = Counter(
    "api_requests_total", "Requests to the index API, by route template, method and status",
    ["route", "method", "status"], registry=REGISTRY,
)
API_SECONDS = Histogram(
    "api_request_seconds", "Time to answer a request of the index API, by route template",
    ["route"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
    registry=REGISTRY,
)
API_PHI_READS = Counter(
    "api_phi_reads_total", "Reads of original values through the index API, by outcome",
    ["outcome"], registry=REGISTRY,
)


def exposition() -> bytes:
    """The metrics in Prometheus text format."""
    return generate_latest(REGISTRY)
