"""Running the pipeline services as real processes against the test backends.

A :class:`Pipeline` holds the environment of one isolated deployment: its own database,
queue prefix, buckets, SCP and health ports. Services run as subprocesses
(``python -m services.<name>``) exactly as in a container, so tests can kill and restart
them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from shared.messaging import RabbitBroker
from shared.messaging.topology import Topology
from shared.storage import Buckets, S3Store
from tests.messaging_support import amqp_problem
from tests.s3_server import S3Endpoint, S3Server, free_port
from tests.s3_server import _remove_buckets as remove_buckets

STORESCU = Path("/usr/bin/storescu")
# Retry delays of the test deployments (seconds): a failing message is retried quickly.
RETRY_DELAY = 0.2
RETRY_MAX_DELAY = 1.0


@dataclass
class ServiceProcess:
    """One running service; its output goes to a log file in the test's folder."""

    name: str
    process: subprocess.Popen[bytes]
    health_port: int
    log: Path

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/readyz", timeout=2
                ) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@dataclass
class Pipeline:
    tmp: Path
    database_url: str
    amqp_url: str
    s3: S3Endpoint
    prefix: str
    buckets: Buckets
    scp_port: int
    processes: list[ServiceProcess] = field(default_factory=list)
    # Topologies of services started with other delivery settings than :attr:`env`'s,
    # deleted with the deployment's own.
    other_topologies: list[Topology] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "AMQP_URL": self.amqp_url,
            "QUEUE_PREFIX": self.prefix,
            "MAX_DELIVERIES": "3",
            "RETRY_DELAY_SECONDS": str(RETRY_DELAY),
            "RETRY_MAX_DELAY_SECONDS": str(RETRY_MAX_DELAY),
            "S3_ENDPOINT": self.s3.endpoint,
            "S3_ACCESS_KEY": self.s3.access_key,
            "S3_SECRET_KEY": self.s3.secret_key,
            "S3_SECURE": "true" if self.s3.secure else "false",
            "BUCKET_INCOMING": self.buckets.incoming,
            "BUCKET_DEIDENTIFIED": self.buckets.deidentified,
            "BUCKET_QUARANTINE": self.buckets.quarantine,
            "BUCKET_EXPORTS": self.buckets.exports,
            "SCP_HOST": "127.0.0.1",
            "SCP_PORT": str(self.scp_port),
            "SCP_AE_TITLE": "ANONSCP",
            "HEALTH_HOST": "127.0.0.1",
            "DATA_DIR": str(self.tmp / "data"),
            "LOG_LEVEL": "INFO",
        }

    @property
    def topology(self) -> Topology:
        """The queue topology the services of this deployment declare."""
        return Topology(self.prefix, 3, RETRY_DELAY, RETRY_MAX_DELAY)

    def start(self, service: str, **extra: str) -> ServiceProcess:
        """Start ``services.<service>`` and wait until it is ready."""
        health = free_port()
        env = {**self.env, "HEALTH_PORT": str(health), **extra}
        return self.launch(service, [sys.executable, "-m", f"services.{service}"], env, health)

    def launch(self, name: str, command: list[str], env: dict[str, str], health_port: int,
               cwd: Path | None = None) -> ServiceProcess:
        """Start ``command`` with exactly ``env`` (a service as a deployment configures it)
        and wait until its ``/readyz`` on ``health_port`` answers; stopped with the
        deployment."""
        log = self.tmp / f"{name}-{len(self.processes)}.log"
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log.open("wb"),
                                   stderr=subprocess.STDOUT)
        running = ServiceProcess(name, process, health_port, log)
        self.processes.append(running)
        running.wait_ready()
        return running

    def storescu(self, folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        """Send every ``*.dcm`` of ``folder`` over one association with DCMTK's storescu."""
        if not STORESCU.exists():
            raise AssertionError("DCMTK's storescu is required: apt-get install dcmtk")
        return subprocess.run(
            [str(STORESCU), "-aec", "ANONSCP", "-aet", "TESTSCU", "+sd", "+r", "+sp", "*.dcm",
             *extra, "127.0.0.1", str(self.scp_port), str(folder)],
            capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "TCP_NODELAY": "1"},
        )

    def counts(self) -> dict[str, int]:
        async def fetch() -> dict[str, int]:
            connection = await asyncpg.connect(self.database_url)
            try:
                row = await connection.fetchrow(
                    "SELECT (SELECT count(*) FROM received_object) AS received,"
                    " (SELECT count(*) FROM instance) AS deidentified,"
                    " (SELECT count(DISTINCT original_sop_instance_uid) FROM instance) AS unique,"
                    " (SELECT count(*) FROM quarantined_object) AS quarantined"
                )
            finally:
                await connection.close()
            assert row is not None
            return dict(row)

        return asyncio.run(fetch())

    def quarantine_reasons(self) -> dict[str, tuple[str, str]]:
        async def fetch() -> dict[str, tuple[str, str]]:
            connection = await asyncpg.connect(self.database_url)
            try:
                rows = await connection.fetch(
                    "SELECT key, reason_code, reason FROM quarantined_object")
            finally:
                await connection.close()
            return {r["key"]: (r["reason_code"], r["reason"]) for r in rows}

        return asyncio.run(fetch())

    def keys(self, bucket: str) -> list[str]:
        async def fetch() -> list[str]:
            store = S3Store(self.s3.endpoint, self.s3.access_key, self.s3.secret_key,
                            self.s3.secure)
            try:
                return await store.list_keys(bucket)
            finally:
                await store.close()

        return asyncio.run(fetch())

    def wait_for(
        self, condition: Callable[[dict[str, int]], bool], timeout: float = 120
    ) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        counts = self.counts()
        while not condition(counts):
            if time.monotonic() > deadline:
                logs = "\n".join(p.log.read_text()[-1500:] for p in self.processes)
                raise AssertionError(f"timed out with counts {counts}\n{logs}")
            time.sleep(0.3)
            counts = self.counts()
        return counts

    def dead_letters(self) -> int:
        async def depth() -> int:
            broker = RabbitBroker(self.amqp_url, self.topology)
            await broker.connect()
            try:
                return len(await broker.dead_letters())
            finally:
                await broker.close()

        return asyncio.run(depth())


@pytest.fixture
def pipeline(
    tmp_path: Path, database_url: str, amqp_url: str, s3_server: S3Server,
    s3_endpoint: S3Endpoint,
) -> Iterator[Pipeline]:
    """An isolated deployment; its processes, queues and buckets are removed afterwards.
    The shared servers are checked first: a test whose RabbitMQ or S3 server does not
    answer fails at once, saying which, instead of waiting for services that cannot start."""
    problem = asyncio.run(amqp_problem(amqp_url))
    if problem is not None:
        pytest.fail(f"RabbitMQ does not answer ({problem})", pytrace=False)
    s3_server.ensure_answering()
    tag = uuid.uuid4().hex[:8]
    buckets = Buckets(f"in-{tag}", f"deid-{tag}", f"quar-{tag}", f"exp-{tag}")
    running = Pipeline(tmp_path, database_url, amqp_url, s3_endpoint, f"t{tag}-", buckets,
                       free_port())
    try:
        yield running
    finally:
        for process in running.processes:
            process.stop()

        async def cleanup() -> None:
            # Also the retry queues a test's own broker with default delays declared. Other
            # topologies first: connecting declares the queues, which must match theirs.
            for topology in (*running.other_topologies, running.topology,
                             Topology(running.prefix, 3)):
                broker = RabbitBroker(amqp_url, topology)
                await broker.connect()
                await broker.delete_topology()
                await broker.close()

        asyncio.run(cleanup())
        remove_buckets(s3_endpoint, buckets.all())
