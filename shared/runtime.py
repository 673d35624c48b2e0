"""Opening what a service needs (index, object store, broker) from its settings, the
readiness checks over them, and running until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from shared.config import ConfigurationError, Settings, load_settings, require
from shared.deid.configured import load_filter, load_rules
from shared.deid.ctp_filter import ObjectFilter
from shared.deid.live import LivePseudonymizer
from shared.deid.rules import RuleSet
from shared.index.connect import OpenIndex, open_index
from shared.messaging import Broker, MemoryBroker, RabbitBroker
from shared.messaging.topology import Topology
from shared.observability.error_log import ErrorLog, installed, logging_service
from shared.observability.health import Check
from shared.observability.logging import configure_logging
from shared.storage import Buckets, ObjectStore, open_store


@dataclass
class Resources:
    """The backends of one process; close them with :meth:`close`."""

    settings: Settings
    index: OpenIndex
    store: ObjectStore
    buckets: Buckets
    broker: Broker
    # Keeps this process's warnings and errors in the index (a process logging as a
    # service: configure_logging); stopped, after a last write, by close().
    error_log: ErrorLog | None = None

    def checks(self) -> dict[str, Check]:
        async def database() -> None:
            async with self.index.pool.acquire() as connection:
                await connection.fetchval("SELECT 1")

        return {"database": database, "broker": self.broker.check, "storage": self.store.check}

    async def close(self) -> None:
        await self.broker.close()
        await self.store.close()
        if self.error_log is not None:
            await self.error_log.stop()
        await self.index.close()


def buckets(settings: Settings) -> Buckets:
    return Buckets(settings.bucket_incoming, settings.bucket_deidentified,
                   settings.bucket_quarantine, settings.bucket_exports)


async def open_resources(settings: Settings, broker: Broker | None = None) -> Resources:
    """Connect to the index, the object store (S3 when ``S3_ENDPOINT`` is set, else the
    folder ``DATA_DIR/objects``) and the broker (RabbitMQ when ``AMQP_URL`` is set, else
    in-process queues), creating buckets and topology. A process that logs as a service
    (:func:`configure_logging`) keeps its warnings and errors in the index from now on."""
    index = await open_index(
        None if settings.database_url else settings.data_dir, settings.database_url,
        settings.site_id, max_connections=8,
    )
    store = open_store(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key,
                       settings.s3_secure, settings.data_dir / "objects")
    names = buckets(settings)
    try:
        await store.ensure_buckets(names.all())
        if broker is None:
            topology = topology_from(settings)
            dependencies = dependency_check(index, store)
            # At a stop, handlers still running after the grace are cancelled and their
            # messages go back to the queue (the orchestrator's grace must exceed it).
            grace = settings.shutdown_grace_seconds
            broker = (RabbitBroker(settings.amqp_url, topology, dependencies=dependencies,
                                   grace=grace)
                      if settings.amqp_url
                      else MemoryBroker(topology, dependencies=dependencies, grace=grace))
        await broker.connect()
    except BaseException:
        await store.close()
        await index.close()
        raise
    error_log = None
    service = logging_service()
    if service is not None and installed() is None:
        error_log = ErrorLog(service)
        error_log.start(index.pool)
    return Resources(settings, index, store, names, broker, error_log)


def topology_from(settings: Settings) -> Topology:
    """The queue topology of the settings (prefix, deliveries, retry delays)."""
    return Topology(settings.queue_prefix, settings.max_deliveries,
                    settings.retry_delay_seconds, settings.retry_max_delay_seconds)


def dependency_check(index: OpenIndex, store: ObjectStore) -> Callable[[], Awaitable[None]]:
    """Raises (naming the dependency) while the database or the object store is down: the
    brokers then pause their consumers instead of spending deliveries."""

    async def check() -> None:
        try:
            async with asyncio.timeout(10), index.pool.acquire() as connection:
                await connection.fetchval("SELECT 1")
        except Exception as exc:
            raise ConnectionError(f"database: {type(exc).__name__}") from exc
        try:
            async with asyncio.timeout(10):
                await store.check()
        except Exception as exc:
            raise ConnectionError(f"storage: {type(exc).__name__}") from exc

    return check


def rules_from(settings: Settings, site_id: str) -> RuleSet:
    """The built-in profile with the configured options, or the configured CTP script."""
    return load_rules(settings.options, site_id, settings.script_path, settings.script_dialect,
                      settings.lookup_table)


def filter_from(settings: Settings) -> ObjectFilter:
    return load_filter(settings.filter_path,
                       reject_structured_reports=not settings.accept_structured_reports,
                       reject_secondary_captures=not settings.accept_secondary_captures,
                       reject_identifying_pixels=not settings.accept_burned_in_annotation)


def pseudonymizer_from(settings: Settings, resources: Resources) -> LivePseudonymizer:
    """The pseudonymizer of a running system: the script and filter in force in the index
    (replaced while running), else those of the settings (:mod:`shared.deid.live`)."""
    return LivePseudonymizer(settings, resources.index)


def service_main(name: str, run: Callable[[Settings], Coroutine[Any, Any, None]]) -> None:
    """Entry point of a deployed service: validated settings (the backends are required),
    JSON logs, then ``run`` until SIGTERM."""
    try:
        settings = load_settings()
        require(settings, "database_url", "amqp_url", "s3_endpoint")
    except ConfigurationError as exc:
        sys.exit(f"{name}: {exc}")
    configure_logging(name, settings.log_level)
    run_loop(run(settings))


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine on uvloop: the same asyncio, with about a third less
    CPU per request or message in the event loop (measured on the index API's lookups,
    docs/benchmarks.md)."""
    import uvloop

    uvloop.run(main)


async def wait_for_signal() -> None:
    """Return on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
