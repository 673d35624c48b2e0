"""What is checked statically because no container engine runs here: the compose file
(also by Debian's docker-compose against the v3.9 schema), the Dockerfile, .dockerignore,
.env.example and the generated conformance statement."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from services.scp_ingest.conformance import conformance_statement
from shared.config import Settings
from tests.deploy_tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["scp-ingest", "anonymizer-worker", "rt-relinker", "qr-fetcher", "exporter",
            "index-api"]


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_runs_every_built_service_with_its_dependencies() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "rabbitmq", "minio", "migrate", "scp-ingest",
            "anonymizer-worker", "rt-relinker"} <= set(services)
    for name in ("scp-ingest", "anonymizer-worker", "rt-relinker"):
        service = services[name]
        assert service["command"] == [name]
        assert "healthcheck" in service and "/readyz" in " ".join(service["healthcheck"]["test"])
        depends = service["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["rabbitmq"]["condition"] == "service_healthy"
        assert depends["minio"]["condition"] == "service_healthy"
        env = service["environment"]
        for variable in ("DATABASE_URL", "AMQP_URL", "S3_ENDPOINT", "S3_ACCESS_KEY"):
            assert variable in env
    assert services["migrate"]["command"] == ["anon", "migrate"]
    for backend in ("postgres", "rabbitmq", "minio"):
        assert "healthcheck" in services[backend]
        assert services[backend]["volumes"]
    assert set(compose["volumes"]) >= {"postgres-data", "rabbitmq-data", "minio-data"}


def test_console_commands_named_in_compose_exist() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    for command in ("anon", *SERVICES):
        assert f'\n{command} = "services.' in pyproject


def test_compose_runs_all_six_services_healthy_and_restarting() -> None:
    compose = _compose()
    assert compose["name"] == "dicom-deid" and "version" not in compose
    services = compose["services"]
    for name in SERVICES:
        service = services[name]
        assert service["command"] == [name]
        assert service["restart"] == "unless-stopped"
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        # Explicit per service (merged from the shared block): what each one is given.
        assert "DATABASE_URL" in service["environment"]
        grace = int(service["stop_grace_period"].rstrip("s"))
        assert grace >= Settings().shutdown_grace_seconds + 30
    assert services["anonymizer-worker"]["deploy"]["replicas"] >= 2
    assert services["rt-relinker"]["deploy"]["replicas"] >= 1
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert set(published) == {"scp-ingest", "index-api"}
    scp = services["scp-ingest"]
    journal = scp["environment"]["SCP_SPOOL_DIR"]
    [volume] = scp["volumes"]
    named, mount = volume.split(":")
    assert named in compose["volumes"] and journal.startswith(mount + "/")


def _compose_variables() -> set[str]:
    """The variables docker-compose.yml interpolates (${NAME}, ${NAME:-x}, ${NAME:?x})."""
    text = (ROOT / "docker-compose.yml").read_text()
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))


def test_env_example_has_every_variable_compose_needs() -> None:
    example = (ROOT / ".env.example").read_text()
    defined = set(re.findall(r"(?m)^([A-Z_][A-Z0-9_]*)=", example))
    missing = _compose_variables() - defined
    assert not missing, sorted(missing)


def test_docker_compose_1_29_accepts_the_file_as_v3_9(tmp_path: Path) -> None:
    """Debian's docker-compose validates against the Compose file format 3.9 schema, which
    has no top-level name and needs a version: a copy with that one difference."""
    docker_compose = require_tool("docker-compose", "Debian package docker-compose, in "
                                  "TEST_PACKAGES")
    text = (ROOT / "docker-compose.yml").read_text()
    copy, count = re.subn(r"(?m)^name: .*$", 'version: "3.9"', text)
    assert count == 1
    (tmp_path / "docker-compose.yml").write_text(copy)
    shutil.copy(ROOT / "Dockerfile", tmp_path / "Dockerfile")
    secrets = {"POSTGRES_PASSWORD": "pg0secret", "RABBITMQ_PASSWORD": "mq0secret",
               "MINIO_ROOT_USER": "minio", "MINIO_ROOT_PASSWORD": "minio0secret"}
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
    done = subprocess.run([docker_compose, "-f", "docker-compose.yml", "config"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    worker = resolved["services"]["anonymizer-worker"]["environment"]
    assert worker["DATABASE_URL"] == "postgresql://anon:pg0secret@postgres:5432/phi"
    assert set(resolved["services"]) >= {"postgres", "rabbitmq", "minio", "migrate", *SERVICES}

    # Without the secrets the file refuses to start, naming what is missing.
    (tmp_path / ".env").write_text("")
    refused = subprocess.run([docker_compose, "-f", "docker-compose.yml", "config"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             check=False)
    assert refused.returncode != 0 and "set POSTGRES_PASSWORD in .env" in refused.stderr


def test_dockerfile_builds_wheels_apart_and_runs_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"(?m)^FROM (\S+)(?: AS (\S+))?$", dockerfile)
    assert len(stages) == 2 and stages[0][1] == "wheels" and not stages[1][1]
    build, final = dockerfile.split("\nFROM ")[1:]
    assert "pip wheel" in build and "COPY infra/db" in build
    # The final stage installs from the first stage's wheels through a bind mount (no layer
    # keeps them), only from them, and builds nothing.
    assert "--mount=type=bind,from=wheels" in final and "--no-index" in final
    assert "apt-get" not in final and "COPY --from" not in final
    assert "MIGRATIONS_DIR=/app/infra/db/migrations" in final
    assert "COPY infra/db/migrations" in final
    user = re.findall(r"(?m)^USER (\S+)$", final)
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0"


def test_dockerignore_keeps_the_build_context_to_what_the_image_needs() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "shared", "services", "infra/db"}
    copied = re.findall(r"(?m)^COPY (?!--)(\S+)", (ROOT / "Dockerfile").read_text())
    assert all(any(c.rstrip("/") == a or c.startswith(a + "/") for a in allowed)
               for c in copied), copied


def test_env_example_documents_every_setting() -> None:
    documented = {
        line.split("=", 1)[0].strip().lstrip("# ")
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and line.strip().lstrip("# ").split("=", 1)[0].isupper()
    }
    expected = {name.upper() for name in Settings.model_fields}
    assert expected <= documented, sorted(expected - documented)


def test_conformance_statement_is_generated_from_the_scp() -> None:
    written = (ROOT / "docs" / "conformance-statement.md").read_text()
    assert written == conformance_statement(), (
        "docs/conformance-statement.md is stale: regenerate it with `anon conformance`"
    )
    assert "| CT Image Storage | `1.2.840.10008.5.1.4.1.1.2` |" in written
    assert "| JPEG 2000 Image Compression | `1.2.840.10008.1.2.4.91` |" in written
