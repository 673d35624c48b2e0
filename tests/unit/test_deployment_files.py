"""What is checked statically because no container engine runs here: the compose file,
the Dockerfile, .env.example and the generated conformance statement."""

from __future__ import annotations

from pathlib import Path

import yaml

from services.scp_ingest.conformance import conformance_statement
from shared.config import Settings

ROOT = Path(__file__).resolve().parents[2]


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
    for command in ("anon", "scp-ingest", "anonymizer-worker", "rt-relinker"):
        assert f'\n{command} = "services.' in pyproject


def test_dockerfile_installs_the_project_and_runs_unprivileged() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install ." in dockerfile
    assert "COPY infra/db" in dockerfile and "MIGRATIONS_DIR=/app/infra/db/migrations" in dockerfile
    assert "\nUSER anon" in dockerfile


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
