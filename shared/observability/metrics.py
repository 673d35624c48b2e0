"""Prometheus metrics. Labels hold service names and reason codes only, never PHI."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

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
    "dicom_set_checks_total", "Sets re-checked by rt-relinker, by kind and resulting status",
    ["kind", "status"], registry=REGISTRY,
)
RECEIVE_SECONDS = Histogram(
    "dicom_receive_seconds", "Time to store and announce one received object",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0), registry=REGISTRY,
)


def exposition() -> bytes:
    """The metrics in Prometheus text format."""
    return generate_latest(REGISTRY)
