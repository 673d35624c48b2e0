"""The qr-fetcher: queries the PACS, turns retrieve requests into jobs, works their items.

Commands (:mod:`shared.commands`): ``query`` (one study-level C-FIND), ``query-batch``
(one per row of a spreadsheet) and ``retrieve`` (study UIDs, an accession list, or the
rows of a batch spreadsheet), which creates a job and answers at once. The job's items
are announced on the ``retrieve`` queue, one message each naming only the job and the
item, and worked by :class:`~shared.qr.retrieval.Retriever`. With ``QR_RETRIEVE=get`` the
objects come back on the C-GET association and are taken in exactly as the Storage SCP
takes them in (:class:`GetReceiver`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pynetdicom import evt

from shared.commands.protocol import QR_FETCHER, CommandFailed, Registry
from shared.config import Settings
from shared.dimse.peer import DimseError, Peer
from shared.dimse.query import StudyMatch, StudyQuery, find_studies
from shared.index import jobs
from shared.ingest import Abandoned, Ingest, IngestFailed, Receipt
from shared.messaging import Broker, Message
from shared.messaging.topology import RETRIEVE
from shared.observability.logging import log_fields
from shared.observability.metrics import QUERIES
from shared.qr.arrivals import imported_studies
from shared.qr.requests import RequestError, parse_accession_list
from shared.qr.retrieval import RetrieveConfig, Retriever, item_key
from shared.runtime import Resources

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
QUERY_FIELDS = ("patient_name", "patient_id", "study_date", "accession", "modality")
BATCH_FIELDS = ("patient_id", "accession", "study_date", "modality")


def pacs_peer(settings: Settings) -> Peer | None:
    if not settings.pacs_host:
        return None
    return Peer(settings.pacs_host, settings.pacs_port, settings.pacs_ae_title,
                settings.qr_ae_title, settings.qr_timeout_seconds)


def retrieve_config(settings: Settings, peer: Peer) -> RetrieveConfig:
    return RetrieveConfig(peer, settings.qr_retrieve, settings.scp_ae_title,
                          settings.qr_arrival_wait_seconds, settings.qr_retries,
                          settings.qr_move_timeout_seconds, settings.qr_max_results)


class GetReceiver:
    """The C-STORE handler of a C-GET association: each object is taken in by
    :class:`Ingest` on the event loop, and answered Success only once it is durable."""

    def __init__(self, ingest: Ingest, loop: asyncio.AbstractEventLoop, timeout: float,
                 source_aet: str) -> None:
        self.ingest = ingest
        self.loop = loop
        self.timeout = timeout
        self.source_aet = source_aet

    def __call__(self, event: evt.Event) -> int:
        receipt = Receipt()
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(
            self.ingest.receive_file(Path(event.dataset_path), "qr-get", self.source_aet,
                                     receipt),
            self.loop)
        try:
            received = future.result(timeout=self.timeout)
        except TimeoutError:
            if receipt.abandon():
                future.cancel()
            return OUT_OF_RESOURCES
        except (IngestFailed, Abandoned):
            return OUT_OF_RESOURCES
        except Exception as exc:
            log.error("object of a C-GET not taken in", extra=log_fields(error=type(exc).__name__))
            return OUT_OF_RESOURCES
        return CANNOT_UNDERSTAND if received.quarantined else SUCCESS


def _match(match: StudyMatch, imported: set[str]) -> dict[str, Any]:
    shown = asdict(match)
    shown["modalities"] = list(match.modalities)
    shown["already_imported"] = match.study_uid in imported
    return shown


class QrFetcher:
    """The commands and the retrieve-queue handler of qr-fetcher."""

    def __init__(self, settings: Settings, resources: Resources) -> None:
        self.settings = settings
        self.resources = resources
        self.pool = resources.index.pool
        self.broker: Broker = resources.broker
        self.peer = pacs_peer(settings)
        store = None
        if settings.qr_retrieve == "get" and self.peer is not None:
            ingest = Ingest(resources.store, resources.buckets, resources.broker,
                            resources.index.index, max_object_bytes=settings.max_object_bytes)
            store = GetReceiver(ingest, asyncio.get_running_loop(), settings.scp_store_timeout,
                                self.peer.called_aet)
        self.retriever = (Retriever(self.pool, retrieve_config(settings, self.peer), store)
                          if self.peer is not None else None)

    def registry(self) -> Registry:
        registry = Registry(QR_FETCHER, (DimseError, RequestError, ValueError))
        registry.add("query", self.query)
        registry.add("query-batch", self.query_batch)
        registry.add("retrieve", self.retrieve)
        return registry

    def _require_peer(self) -> Peer:
        if self.peer is None:
            raise CommandFailed("no PACS is configured: set PACS_HOST, PACS_PORT and "
                                "PACS_AE_TITLE", "NotConfigured")
        return self.peer

    async def _find(self, query: StudyQuery) -> list[StudyMatch]:
        try:
            matches = await asyncio.to_thread(find_studies, self._require_peer(), query,
                                              self.settings.qr_max_results)
        except DimseError:
            QUERIES.labels(outcome="failed").inc()
            raise
        QUERIES.labels(outcome="found" if matches else "none").inc()
        return matches

    async def query(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """One study-level query; each study marked when the index already holds it."""
        query = StudyQuery(**{f: str(arguments.get(f) or "") for f in QUERY_FIELDS})
        matches = await self._find(query)
        imported = await imported_studies(self.pool, [m.study_uid for m in matches])
        return {"studies": [_match(m, imported) for m in matches]}

    async def query_batch(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """One query per spreadsheet row: a result per study found, or per row without one."""
        results: list[dict[str, Any]] = []
        for row in _rows(arguments):
            number = int(row.get("row") or 0)
            if row.get("error"):
                results.append({"row": number, "status": "error", "reason": str(row["error"])})
                continue
            try:
                matches = await self._find(
                    StudyQuery(**{f: str(row.get(f) or "") for f in BATCH_FIELDS}))
            except (DimseError, ValueError) as exc:
                results.append({"row": number, "status": "error", "reason": str(exc)})
                continue
            if not matches:
                results.append({"row": number, "status": "not found"})
            imported = await imported_studies(self.pool, [m.study_uid for m in matches])
            for m in matches:
                results.append({
                    "row": number, "status": "found", "patient_name": m.patient_name,
                    "patient_id": m.patient_id, "study_date": m.study_date,
                    "accession": m.accession, "modalities": "\\".join(m.modalities),
                    "series": m.series_count, "instances": m.instance_count,
                    "study_uid": m.study_uid, "already_imported": m.study_uid in imported,
                })
        return {"results": results}

    async def retrieve(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """A retrieve job for study UIDs, an accession list or batch rows; answered at once
        with the job's number and a word per line of the request."""
        self._require_peer()
        items: list[jobs.NewItem] = []
        lines: list[dict[str, Any]] = []
        if arguments.get("accessions") is not None:
            source = "accession-list"
            for key in parse_accession_list(str(arguments["accessions"])):
                if key.duplicate_of is not None:
                    lines.append({"line": key.line, "status": "duplicate",
                                  "duplicate_of": key.duplicate_of})
                    continue
                kind = "study-uid" if key.kind == "study-uid" else "accession"
                items.append(jobs.NewItem(item_key(kind, key.value), line=key.line,
                                          study_uid=key.value if kind == "study-uid" else ""))
                lines.append({"line": key.line, "status": "queued"})
        elif arguments.get("rows") is not None:
            source = "batch"
            for row in _rows(arguments):
                number = int(row.get("row") or 0)
                if row.get("error"):
                    items.append(jobs.NewItem(item_key("query", {}), line=number,
                                              status=jobs.FAILED,
                                              message=f"row {number}: {row['error']}"))
                elif row.get("study_uid"):
                    items.append(jobs.NewItem(item_key("study-uid", str(row["study_uid"])),
                                              line=number, study_uid=str(row["study_uid"])))
                else:
                    fields = {f: str(row[f]) for f in BATCH_FIELDS if row.get(f)}
                    if not fields:
                        continue
                    items.append(jobs.NewItem(item_key("query", fields), line=number))
                lines.append({"line": number, "status": "queued"})
        else:
            source = "study-uids"
            uids = [str(u).strip() for u in arguments.get("study_uids") or [] if str(u).strip()]
            if not all(uid.isprintable() and len(uid) <= 64 for uid in uids):
                raise CommandFailed("a study instance UID is at most 64 printable characters",
                                    "BadRequest")
            for uid in dict.fromkeys(uids):
                items.append(jobs.NewItem(item_key("study-uid", uid), study_uid=uid))
        if not items:
            raise CommandFailed("nothing to retrieve: the request names no study", "EmptyRequest")
        job_id = await jobs.create_job(
            self.pool, jobs.RETRIEVE,
            {"source": source, "method": self.settings.qr_retrieve,
             "pacs": self._require_peer().describe(),
             "keys": [item.key for item in items]},
            items)
        for position, item in enumerate(items, start=1):
            if item.status == jobs.PENDING:
                await self.broker.publish(RETRIEVE, {"job": job_id, "position": position},
                                          correlation_id=f"job-{job_id}-{position}")
        log.info("retrieve job created", extra=log_fields(job=job_id, items=len(items)))
        return {"job": job_id, "items": len(items), "lines": lines}

    async def handle(self, message: Message) -> None:
        """The retrieve queue's handler: one item of one job."""
        if self.retriever is None:
            raise RuntimeError("no PACS is configured (PACS_HOST)")
        await self.retriever.run_item(int(message.body["job"]), int(message.body["position"]))

    async def announce_open_items(self) -> int:
        """Announce again every unfinished retrieve item (after in-process queues were
        lost); the number announced."""
        open_items = await jobs.open_items(self.pool, jobs.RETRIEVE)
        for job_id, position in open_items:
            await self.broker.publish(RETRIEVE, {"job": job_id, "position": position},
                                      correlation_id=f"job-{job_id}-{position}")
        return len(open_items)


def _rows(arguments: dict[str, Any]) -> list[dict[str, Any]]:
    rows = arguments.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise CommandFailed("rows must be a list of objects", "BadRequest")
    return rows
