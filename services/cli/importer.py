"""``anon import``: send local files into a running system.

With ``AMQP_URL`` and ``S3_ENDPOINT`` configured, files are stored and announced directly,
as the Storage SCP would; otherwise they are sent by C-STORE to the SCP of a running
``anon serve`` (``--host``, ``--port``, ``--aet``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, evt
from tqdm import tqdm

from shared.config import Settings
from shared.dimse.association import set_nodelay
from shared.ingest import Ingest, IngestFailed
from shared.observability.logging import quiet_pynetdicom
from shared.runtime import open_resources


@dataclass
class ImportSummary:
    sent: int = 0
    quarantined: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"sent:        {self.sent}", f"quarantined: {self.quarantined}",
                 f"failed:      {len(self.failed)}"]
        lines += [f"  {path}: {reason}" for path, reason in self.failed]
        return lines


async def import_direct(files: list[Path], settings: Settings, progress: bool) -> ImportSummary:
    """Store and announce each file through the deployed broker and object store."""
    resources = await open_resources(settings)
    summary = ImportSummary()
    ingest = Ingest(resources.store, resources.buckets, resources.broker, resources.index.index,
                    max_object_bytes=settings.max_object_bytes)
    try:
        for path in tqdm(files, unit="file", disable=not progress, desc="importing"):
            try:
                received = await ingest.receive_file(path, "import")
            except (IngestFailed, OSError) as exc:
                summary.failed.append((str(path), str(exc)))
                continue
            if received.quarantined:
                summary.quarantined += 1
            else:
                summary.sent += 1
    finally:
        await ingest.drain()
        await resources.close()
    return summary


def import_cstore(
    files: list[Path], host: str, port: int, called_aet: str, progress: bool
) -> ImportSummary:
    """Send each file by C-STORE over one association, proposing the SOP classes and
    transfer syntaxes the files use (at most 128 combinations, as PS3.8 allows)."""
    quiet_pynetdicom()
    summary = ImportSummary()
    readable: list[tuple[Path, str, str]] = []
    for path in files:
        try:
            header = dcmread(path, stop_before_pixels=True)
            readable.append((path, str(header.SOPClassUID),
                             str(header.file_meta.TransferSyntaxUID)))
        except Exception as exc:
            summary.failed.append((str(path), f"not readable as DICOM ({type(exc).__name__})"))
    pairs = sorted({(sop, ts) for _, sop, ts in readable})
    if len(pairs) > 128:
        raise ValueError("more than 128 SOP class / transfer syntax combinations; "
                         "import the files in smaller groups")
    ae = AE(ae_title="ANONIMPORT")
    for sop, ts in pairs:
        ae.add_requested_context(sop, [ts])
    assoc = None
    try:
        for path, _, _ in tqdm(readable, unit="file", disable=not progress, desc="importing"):
            if assoc is None or not assoc.is_established:
                assoc = ae.associate(host, port, ae_title=called_aet,
                                     evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])
                if not assoc.is_established:
                    raise ConnectionError(f"no association with {called_aet} at {host}:{port}")
            status = assoc.send_c_store(dcmread(path))
            code = int(getattr(status, "Status", -1)) if status else -1
            if code == 0:
                summary.sent += 1
            elif code == 0xC000:
                summary.quarantined += 1
            else:
                summary.failed.append((str(path), f"C-STORE status {code:04X}"))
    finally:
        if assoc is not None and assoc.is_established:
            assoc.release()
    return summary
