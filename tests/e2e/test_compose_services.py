"""Every service as docker-compose.yml configures it, and a study through all of them.

The compose file is read when the test runs, so the test follows its changes: each service
of this project's image (its command is one of the project's console scripts) is started
here as a process of its own, with the environment compose gives it (its ``environment``
after merge keys, interpolated from a test ``.env``, which is also what its ``env_file``
brings) and its ``command``. Only what exists on a compose network alone is changed: the
addresses of the compose file's PostgreSQL, RabbitMQ and MinIO become the test's servers,
the ports the services listen on become free ports, absolute paths (volumes) become
folders of the test, and a queue prefix and bucket names keep the run apart from other
tests. The study is sent to scp-ingest, de-identified, relinked, exported through the
index API and the exporter, then found by the qr-fetcher at the destination, which is
also its PACS. A one-shot service the others wait for (``service_completed_successfully``:
the migration) runs to its end first. A variable the services do not read
(``shared/config.py``) fails the test, so the compose file cannot configure what nothing
reads.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import Settings, load_settings
from shared.runtime import topology_from
from tests import synth
from tests.api_support import Api
from tests.orthanc import Orthanc
from tests.pipeline_support import Pipeline
from tests.s3_server import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
VENV_BIN = Path(sys.executable).parent
SERVICES = ("scp-ingest", "qr-fetcher", "anonymizer-worker", "rt-relinker", "exporter",
            "index-api")
# The ports a service listens on; compose gives every container the same ones.
LISTENING = ("HEALTH_PORT", "SCP_PORT", "API_PORT")
# $$, ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error},
# ${NAME:+other}, ${NAME+other}, $NAME: compose's interpolation.
VARIABLE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))")


@dataclass(frozen=True)
class ComposeService:
    name: str
    command: list[str]
    environment: dict[str, str]
    env_file: bool
    one_shot: bool


def interpolate(text: str, dotenv: Mapping[str, str]) -> str:
    def value(found: re.Match[str]) -> str:
        if found.group("dollar"):
            return "$"
        name = found.group("name") or found.group("bare")
        op, arg = found.group("op"), found.group("arg") or ""
        current = dotenv.get(name)
        unset = current is None or (bool(op) and op.startswith(":") and not current)
        if op in (":-", "-"):
            return arg if unset else str(current)
        if op in (":?", "?") and unset:
            raise AssertionError(f"docker-compose.yml requires {name}: {arg}")
        if op in (":+", "+"):
            return "" if unset else arg
        return current or ""

    return VARIABLE.sub(value, text)


def _text(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _environment(spec: dict[str, Any], dotenv: Mapping[str, str]) -> dict[str, str]:
    """A service's ``environment`` (mapping or list), interpolated; a name without a value
    takes it from the .env, as compose takes it from its shell."""
    declared = spec.get("environment") or {}
    if isinstance(declared, list):
        declared = dict(item.split("=", 1) if "=" in item else (item, None)
                        for item in declared)
    found: dict[str, str] = {}
    for key, value in declared.items():
        if value is None:
            if key in dotenv:
                found[key] = dotenv[key]
        else:
            found[key] = interpolate(_text(value), dotenv)
    return found


def _awaited_to_completion(declared: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for spec in declared.values():
        depends = spec.get("depends_on") or {}
        if isinstance(depends, dict):
            names |= {name for name, how in depends.items()
                      if (how or {}).get("condition") == "service_completed_successfully"}
    return names


def compose_services(dotenv: Mapping[str, str]) -> dict[str, ComposeService]:
    """The services of docker-compose.yml that run this project's commands, in its order."""
    declared: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    one_shot = _awaited_to_completion(declared)
    found: dict[str, ComposeService] = {}
    for name, spec in declared.items():
        command = spec.get("command") or []
        argv = shlex.split(command) if isinstance(command, str) else [_text(c) for c in command]
        if argv and argv[0] in scripts:
            found[name] = ComposeService(
                name, [interpolate(a, dotenv) for a in argv], _environment(spec, dotenv),
                bool(spec.get("env_file")), name in one_shot)
    return found


def compose_hosts() -> list[str]:
    """Every service name of the compose file: the host names of its network."""
    return list(yaml.safe_load(COMPOSE.read_text())["services"])


def unknown_variables(services: Mapping[str, ComposeService]) -> dict[str, list[str]]:
    """Per service, what compose sets and no setting reads."""
    known = {name.upper() for name in Settings.model_fields}
    return {s.name: sorted(set(s.environment) - known) for s in services.values()
            if set(s.environment) - known}


def _names_a_host(value: str, host: str) -> bool:
    """Whether ``value`` is, or is a URL naming, ``host`` (minio:9000, x://u:p@postgres/db)."""
    return re.search(rf"(^|@|//){re.escape(host)}(:\d+)?(/|$)", value) is not None


def dotenv_for(deployment: Pipeline, destination: Orthanc) -> dict[str, str]:
    """The operator's .env of this test: the compose file's secrets, the destination, which
    is also the PACS the qr-fetcher queries."""
    return {"POSTGRES_PASSWORD": "compose-test", "RABBITMQ_PASSWORD": "compose-test",
            "MINIO_ROOT_USER": deployment.s3.access_key,
            "MINIO_ROOT_PASSWORD": deployment.s3.secret_key,
            "EXPORT_HOST": destination.host, "EXPORT_PORT": str(destination.dicom_port),
            "EXPORT_CALLED_AE": destination.aet, "EXPORT_QUIET_SECONDS": "1",
            "PACS_HOST": destination.host, "PACS_PORT": str(destination.dicom_port),
            "PACS_AE_TITLE": destination.aet}


def local_environment(service: ComposeService, deployment: Pipeline,
                      dotenv: Mapping[str, str]) -> tuple[dict[str, str], int]:
    """What the service gets here, and the port of its /readyz."""
    env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(deployment.tmp),
           "LANG": "C.UTF-8",
           **(dotenv if service.env_file else {}), **service.environment}
    stand_ins = {"DATABASE_URL": deployment.database_url, "AMQP_URL": deployment.amqp_url,
                 "S3_ENDPOINT": deployment.s3.endpoint}
    hosts = compose_hosts()
    for key, local in stand_ins.items():
        if key in env and any(_names_a_host(env[key], host) for host in hosts):
            env[key] = local
    if "S3_ENDPOINT" in env and deployment.s3.secure:
        env["S3_SECURE"] = "true"
    ports: dict[str, int] = {}
    env.setdefault("HEALTH_PORT", str(Settings.model_fields["health_port"].default))
    for key in LISTENING:
        if key in env:
            chosen = deployment.scp_port if key == "SCP_PORT" else free_port()
            env[key] = str(ports.setdefault(env[key], chosen))
    volumes = deployment.tmp / "volumes" / service.name
    for key, value in service.environment.items():
        if value.startswith("/"):
            env[key] = str(volumes / value.lstrip("/"))
            Path(env[key]).parent.mkdir(parents=True, exist_ok=True)
    env["QUEUE_PREFIX"] = deployment.prefix + env.get("QUEUE_PREFIX", "")
    buckets = deployment.buckets
    env.update(BUCKET_INCOMING=buckets.incoming, BUCKET_DEIDENTIFIED=buckets.deidentified,
               BUCKET_QUARANTINE=buckets.quarantine, BUCKET_EXPORTS=buckets.exports)
    for key, value in env.items():
        named = [host for host in hosts if _names_a_host(value, host)]
        assert not named, (f"{service.name}: {key} points at the compose host {named[0]}, "
                           "for which this test has no stand-in")
    return env, int(env["HEALTH_PORT"])


def _command(service: ComposeService) -> list[str]:
    script = VENV_BIN / service.command[0]
    assert script.is_file(), f"{service.name}: no console script {script}"
    return [str(script), *service.command[1:]]


def _folder(deployment: Pipeline, service: ComposeService) -> Path:
    """The service's working folder: its own, like a container's."""
    folder = deployment.tmp / "work" / service.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait(condition: Callable[[], bool], timeout: float, what: str,
          deployment: Pipeline) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.log.read_text()[-1500:]}"
                             for p in deployment.processes)
            raise AssertionError(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.5)


def test_the_compose_file_sets_only_variables_the_services_read() -> None:
    services = compose_services(_placeholder_dotenv())
    assert set(SERVICES) <= set(services), f"compose runs {sorted(services)}"
    assert not unknown_variables(services), (
        f"docker-compose.yml sets variables no setting reads: {unknown_variables(services)}")


def _placeholder_dotenv() -> dict[str, str]:
    """Whatever the compose file requires, set: for reading it without servers."""
    required = re.findall(r"\$\{([A-Za-z_]\w*):?\?", COMPOSE.read_text())
    return dict.fromkeys(required, "set")


def test_a_study_goes_through_every_service_as_compose_configures_it(
    pipeline: Pipeline, orthanc_factory: Any, tmp_path: Path,
) -> None:
    destination: Orthanc = orthanc_factory("RESEARCH", check_called_aet=True)
    dotenv = dotenv_for(pipeline, destination)
    services = compose_services(dotenv)
    assert set(SERVICES) <= set(services), f"compose runs {sorted(services)}"
    assert not unknown_variables(services), (
        f"docker-compose.yml sets variables no setting reads: {unknown_variables(services)}")
    environments = {name: local_environment(s, pipeline, dotenv)
                    for name, s in services.items()}
    for env, _ in environments.values():
        topology = topology_from(load_settings(_env_file=None, **{
            k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields}))
        if topology not in pipeline.other_topologies:
            pipeline.other_topologies.append(topology)

    for service in (s for s in services.values() if s.one_shot):
        env, _ = environments[service.name]
        done = subprocess.run(_command(service), env=env, cwd=_folder(pipeline, service),
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{service.name}: {done.stdout}{done.stderr}"
    for service in (s for s in services.values() if not s.one_shot):
        env, health = environments[service.name]
        pipeline.launch(service.name, _command(service), env, health,
                        cwd=_folder(pipeline, service))

    study = tmp_path / "study"
    study.mkdir()
    rt_set = synth.make_rt_set(3, 2, 1, patient_index=4)
    for n, ds in enumerate(rt_set.all()):
        synth.write(ds, study / f"{n:02d}.dcm")
    sent = pipeline.storescu(study)
    assert sent.returncode == 0, sent.stdout + sent.stderr

    api_env, _ = environments["index-api"]
    api = Api(f"http://127.0.0.1:{api_env['API_PORT']}")
    created = subprocess.run([str(VENV_BIN / "anon"), "token", "create", "--role", "operator",
                              "--name", "compose-test"], env=api_env,
                             cwd=_folder(pipeline, services["index-api"]),
                             capture_output=True, text=True, timeout=60, check=False)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()

    def status() -> dict[str, Any]:
        answer = api.get("/api/v1/status", token)
        return answer.json() if answer.status == 200 else {}

    objects = len(rt_set.all())
    _wait(lambda: status().get("deidentified") == objects
          and status().get("rt_sets", {}).get("complete") == 1,
          120, f"{objects} objects de-identified and their RT set complete", pipeline)
    [patient] = api.get("/api/v1/patients", token).json()["items"]
    pseudonym = patient["pseudo_patient_id"]

    started = api.call("POST", "/api/v1/exports", token, json_body={"patients": [pseudonym]})
    assert started.status == 202, started.body
    job_url = started.json()["url"]
    ended = ("complete", "incomplete", "failed")
    _wait(lambda: api.get(job_url, token).json().get("status") in ended, 120, "the export job",
          pipeline)
    assert api.get(job_url, token).json()["status"] == "complete"
    assert len(destination.instances()) == objects
    phi = synth.phi_strings(synth.phi_for(rt_set.patient_index))
    for path in (p for p in (destination.folder / "storage").rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert not [s for s in phi if s in data], f"planted PHI in Orthanc's {path.name}"
    assert api.get("/api/v1/status", token).json()["exported"]["patients"] == 1
    # The qr-fetcher, asked through the index API, finds the exported study at its PACS.
    found = api.call("POST", "/api/v1/query", token, json_body={"patient_id": pseudonym})
    assert found.status == 200, found.body
    assert [s["instances"] for s in found.json()["studies"]] == [objects]
    assert api.get("/api/v1/status").status == 401
