"""infra/k8s: every overlay renders with ``kubectl kustomize``, every rendered object is
valid for Kubernetes 1.32 (kubernetes-validate) or for KEDA's CRD schemas vendored in
infra/k8s/schemas, and the manifests keep what docs/operations.md promises."""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shared.config import Settings
from shared.messaging.topology import ANONYMIZE
from tests.deploy_tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
KUBERNETES_VERSION = "1.32.0"
SERVICES = ["scp-ingest", "anonymizer-worker", "rt-relinker", "qr-fetcher", "exporter",
            "index-api"]
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.v1alpha1.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentications.v1alpha1.yaml",
}


@cache
def _rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = require_tool("kubectl", "it renders the kustomize overlays")
    done = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def _objects(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in _rendered(overlay) if o["kind"] == kind}


def _workloads(overlay: str) -> dict[str, dict[str, Any]]:
    return {**_objects(overlay, "Deployment"), **_objects(overlay, "StatefulSet")}


def test_the_expected_overlays_exist() -> None:
    assert OVERLAYS == ["hpa", "keda", "trial"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_valid(overlay: str) -> None:
    for obj in _rendered(overlay):
        where = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        schema_file = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if schema_file is not None:
            schema = yaml.safe_load((K8S / "schemas" / schema_file).read_text())
            try:
                jsonschema.validate(obj, schema)
            except jsonschema.ValidationError as exc:
                raise AssertionError(f"{where}: {exc.message}") from None
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{where}: {exc.message}") from None


def test_the_vendored_crd_schemas_refuse_what_keda_refuses() -> None:
    """The schemas check something: a trigger without type, an auth ref without a key."""
    scaled = yaml.safe_load((K8S / "schemas" / CRD_SCHEMAS[
        ("keda.sh/v1alpha1", "ScaledObject")]).read_text())
    obj = dict(_objects("keda", "ScaledObject")["anonymizer-worker"])
    broken = {**obj, "spec": {**obj["spec"], "triggers": [{"metadata": {"value": 5}}]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, scaled)
    auth = yaml.safe_load((K8S / "schemas" / CRD_SCHEMAS[
        ("keda.sh/v1alpha1", "TriggerAuthentication")]).read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"spec": {"secretTargetRef": [{"parameter": "host"}]}}, auth)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_runs_with_probes_resources_and_no_privileges(overlay: str) -> None:
    workloads = _workloads(overlay)
    assert set(SERVICES) <= set(workloads)
    assert workloads["scp-ingest"]["kind"] == "StatefulSet"
    for name in SERVICES:
        pod = workloads[name]["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["command"] == [name]
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {"requests", "limits"} <= set(container["resources"])
        refs = {next(iter(ref)): next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert refs == {"configMapRef": "dicom-deid-config", "secretRef": "dicom-deid-secrets"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert {v["name"]: v for v in pod["volumes"]}[mounts["/tmp"]]["emptyDir"] is not None


def test_the_configmap_holds_only_settings_and_no_credentials() -> None:
    data = _objects("keda", "ConfigMap")["dicom-deid-config"]["data"]
    known = {name.upper() for name in Settings.model_fields}
    assert set(data) <= known, sorted(set(data) - known)
    assert not {"DATABASE_URL", "AMQP_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY"} & set(data)
    assert data["SCP_AE_TITLE"] and data["SCP_PORT"] == "11112"


def test_the_journal_is_on_a_claim_of_each_scp_pod() -> None:
    scp = _workloads("keda")["scp-ingest"]
    [claim] = scp["spec"]["volumeClaimTemplates"]
    [container] = scp["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config = _objects("keda", "ConfigMap")["dicom-deid-config"]["data"]
    assert mounts[claim["metadata"]["name"]] == config["SCP_SPOOL_DIR"]


def test_the_pacs_reaches_the_scp_at_a_fixed_port() -> None:
    base = _objects("keda", "Service")["scp-ingest"]["spec"]
    assert base["type"] == "LoadBalancer" and base["externalTrafficPolicy"] == "Local"
    assert [p["port"] for p in base["ports"]] == [11112]
    trial = _objects("trial", "Service")["scp-ingest"]["spec"]
    assert trial["type"] == "NodePort" and trial["ports"][0]["nodePort"] == 31112
    for overlay in OVERLAYS:
        assert {"scp-ingest", "index-api"} <= set(_objects(overlay, "PodDisruptionBudget"))


def test_keda_scales_workers_on_the_anonymize_queue_counting_unacknowledged() -> None:
    scaled = _objects("keda", "ScaledObject")["anonymizer-worker"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "anonymizer-worker"
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["protocol"] == "http"
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert trigger["metadata"]["queueName"] == ANONYMIZE
    auth = _objects("keda", "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    assert auth["spec"]["secretTargetRef"][0]["name"] == "dicom-deid-secrets"
    assert not _objects("keda", "HorizontalPodAutoscaler")


@pytest.mark.parametrize("overlay", ["hpa", "trial"])
def test_without_keda_an_hpa_scales_workers_on_cpu(overlay: str) -> None:
    hpa = _objects(overlay, "HorizontalPodAutoscaler")["anonymizer-worker"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert not _objects(overlay, "ScaledObject")


def test_the_grace_period_outlasts_the_shutdown_grace() -> None:
    """A pod is killed only after a consumer's handlers had SHUTDOWN_GRACE_SECONDS and its
    three broker round trips (10 s each) of the stop; the SCP's relay its store timeout."""
    config = _objects("keda", "ConfigMap")["dicom-deid-config"]["data"]
    grace = float(config["SHUTDOWN_GRACE_SECONDS"])
    workloads = _workloads("keda")
    for name in ("anonymizer-worker", "rt-relinker", "qr-fetcher", "exporter"):
        assert workloads[name]["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"] >= grace + 30
    scp = workloads["scp-ingest"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert scp > Settings().scp_store_timeout + 30


def test_the_migration_is_a_job() -> None:
    job = _objects("keda", "Job")["migrate"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["anon", "migrate"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _pod_labels(overlay: str) -> dict[str, dict[str, str]]:
    labels = {name: w["spec"]["template"]["metadata"]["labels"]
              for name, w in _workloads(overlay).items()}
    labels.update({name: j["spec"]["template"]["metadata"]["labels"]
                   for name, j in _objects(overlay, "Job").items()})
    return labels


def _allowed_from(overlay: str, target: str) -> list[dict[str, Any]]:
    """The ``from`` peers of every policy selecting the pods of ``target``."""
    labels = _pod_labels(overlay)[target]
    peers: list[dict[str, Any]] = []
    for policy in _objects(overlay, "NetworkPolicy").values():
        if _selects(policy["spec"]["podSelector"], labels):
            for rule in policy["spec"].get("ingress", []):
                peers.extend(rule.get("from", [{"anywhere": True}]))
    return peers


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_open_only_scp_and_api(overlay: str) -> None:
    policies = _objects(overlay, "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and not deny.get(
        "ingress")
    open_to_all = {name for name in _pod_labels(overlay)
                   if {"anywhere": True} in _allowed_from(overlay, name)}
    assert open_to_all == {"scp-ingest", "index-api"}


def test_trial_backends_are_reached_only_by_the_services_that_need_them() -> None:
    labels = _pod_labels("trial")
    for backend, clients in (("postgres", {*SERVICES, "migrate"}),
                             ("rabbitmq", set(SERVICES)), ("minio", set(SERVICES))):
        peers = [p for p in _allowed_from("trial", backend) if "podSelector" in p]
        reached = {name for name, pod in labels.items()
                   if any(_selects(p["podSelector"], pod) for p in peers)}
        assert reached == clients, backend
