"""infra/prometheus/alerts.yml: promtool accepts it, and every metric it names is one the
services export (shared/observability/metrics.py) or one of RabbitMQ's own."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from shared.observability.metrics import REGISTRY
from tests.deploy_tools import require_tool

RULES = Path(__file__).resolve().parents[2] / "infra" / "prometheus" / "alerts.yml"
# Metrics of RabbitMQ's Prometheus plugin (per-object metrics) the rules use.
RABBITMQ_METRICS = {"rabbitmq_queue_messages"}
# Words in an expression that are not metric names.
PROMQL_WORDS = {
    "sum", "by", "rate", "increase", "deriv", "min_over_time", "histogram_quantile",
    "absent", "and", "or", "unless", "up", "le", "job", "instance", "queue", "reason",
    "stage", "reason_code", "outcome", "status",
}


def _exported() -> set[str]:
    """Every sample name the services' registry exposes, labelled ones included before their
    first sample (counters' _total, histograms' _bucket/_sum/_count)."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "gauge": ("",),
                "histogram": ("_bucket", "_sum", "_count")}
    for metric in REGISTRY.collect():
        names.update(f"{metric.name}{suffix}" for suffix in suffixes[metric.type])
    return names


def _rules() -> list[dict[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    promtool = require_tool("promtool", "Debian package prometheus, in TEST_PACKAGES")
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_named_exists() -> None:
    exported = _exported()
    used: set[str] = set()
    for rule in _rules():
        expr = re.sub(r'"[^"]*"', "", rule["expr"])  # label values
        expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
        used.update(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    metrics = used - PROMQL_WORDS
    unknown = metrics - exported - RABBITMQ_METRICS
    assert not unknown, sorted(unknown)
    # The alerts the operations guide promises.
    for name in ("dicom_scp_journal_entries", "dicom_objects_quarantined_total",
                 "dicom_export_patients_total", "rabbitmq_queue_messages"):
        assert name in metrics


def test_every_rule_is_an_alert_with_a_summary_and_a_severity() -> None:
    rules = _rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
