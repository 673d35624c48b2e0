"""Putting local files into a deployed system: store each in the incoming bucket and
announce it on the anonymize queue, as the Storage SCP does (:mod:`shared.ingest`).

Without a broker and an object store to reach, files go in by C-STORE instead
(:func:`shared.dimse.store.send_files`); both report an :class:`ImportSummary`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.batch.progress import NoProgress, Progress
from shared.config import Settings
from shared.ingest import Ingest, IngestFailed
from shared.runtime import open_resources


@dataclass
class ImportSummary:
    sent: int = 0
    quarantined: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # path as given, reason


async def import_direct(
    files: list[Path], settings: Settings, progress: Progress | None = None
) -> ImportSummary:
    """Store and announce each file through the deployed broker and object store."""
    progress = progress or NoProgress()
    resources = await open_resources(settings)
    summary = ImportSummary()
    ingest = Ingest(resources.store, resources.buckets, resources.broker, resources.index.index,
                    max_object_bytes=settings.max_object_bytes)
    try:
        progress.stage("importing", len(files))
        for path in files:
            try:
                received = await ingest.receive_file(path, "import")
            except (IngestFailed, OSError) as exc:
                summary.failed.append((str(path), str(exc)))
                continue
            finally:
                progress.advance()
            if received.quarantined:
                summary.quarantined += 1
            else:
                summary.sent += 1
    finally:
        await ingest.drain()
        await resources.close()
    return summary
