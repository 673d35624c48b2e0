"""Sending files by C-STORE (as an SCU) to a Storage SCP."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.association import Association

from shared.batch.importing import ImportSummary
from shared.batch.progress import NoProgress, Progress
from shared.dimse.association import set_nodelay
from shared.observability.logging import quiet_pynetdicom

# PS3.8 numbers presentation contexts with odd IDs from 1 to 255.
MAX_CONTEXTS = 128
SUCCESS = 0x0000
# What our Storage SCP answers for an object it received and quarantined.
QUARANTINED = 0xC000


def send_files(
    files: list[Path],
    host: str,
    port: int,
    called_aet: str,
    progress: Progress | None = None,
    calling_aet: str = "ANONIMPORT",
) -> ImportSummary:
    """Send each file by C-STORE over one association, proposing the SOP classes and
    transfer syntaxes the files use (at most 128 combinations, as PS3.8 allows; more is a
    ``ValueError``). A file that is not DICOM is listed as failed; no association at all is
    a ``ConnectionError``."""
    quiet_pynetdicom()
    progress = progress or NoProgress()
    summary = ImportSummary()
    readable: list[tuple[Path, str, str]] = []
    progress.stage("reading headers", len(files))
    for path in files:
        try:
            header = dcmread(path, stop_before_pixels=True)
            readable.append((path, str(header.SOPClassUID),
                             str(header.file_meta.TransferSyntaxUID)))
        except Exception as exc:
            summary.failed.append((str(path), f"not readable as DICOM ({type(exc).__name__})"))
        progress.advance()
    pairs = sorted({(sop, ts) for _, sop, ts in readable})
    if len(pairs) > MAX_CONTEXTS:
        raise ValueError(f"more than {MAX_CONTEXTS} SOP class / transfer syntax combinations; "
                         "import the files in smaller groups")
    ae = AE(ae_title=calling_aet)
    for sop, ts in pairs:
        ae.add_requested_context(sop, [ts])
    assoc: Association | None = None
    progress.stage("importing", len(readable))
    try:
        for path, _, _ in readable:
            if assoc is None or not assoc.is_established:
                assoc = ae.associate(host, port, ae_title=called_aet,
                                     evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])
                if not assoc.is_established:
                    raise ConnectionError(f"no association with {called_aet} at {host}:{port}")
            status = assoc.send_c_store(dcmread(path))
            code = int(getattr(status, "Status", -1)) if status else -1
            if code == SUCCESS:
                summary.sent += 1
            elif code == QUARANTINED:
                summary.quarantined += 1
            else:
                summary.failed.append((str(path), f"C-STORE status {code:04X}"))
            progress.advance()
    finally:
        if assoc is not None and assoc.is_established:
            assoc.release()
    return summary
