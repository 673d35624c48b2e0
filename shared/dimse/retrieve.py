"""Retrieving studies, series or instances from a PACS: C-MOVE (the PACS sends them to a
Storage SCP it knows by AE title) and C-GET (it sends them back on our own association).

A retrieve is a long operation whose end a job must be able to judge: every response is
checked, the sub-operation counts are reported as they come, and a final status other than
success is an outcome with counts and an operator's explanation (what failed, what to check
on the PACS), not an exception, so the caller can tell a partial retrieve from none.
Problems of the connection itself, and a retrieve that outlives its time, are raised.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import StoragePresentationContexts, _config, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from pynetdicom.status import QR_GET_SERVICE_CLASS_STATUS, QR_MOVE_SERVICE_CLASS_STATUS

from shared.dimse.peer import (
    OperationTimeout,
    Peer,
    Stopwatch,
    abort,
    lost,
    new_ae,
    open_association,
    status_text,
)

log = logging.getLogger(__name__)

MOVE_MODEL = StudyRootQueryRetrieveInformationModelMove
GET_MODEL = StudyRootQueryRetrieveInformationModelGet
SUCCESS = 0x0000
PENDING = (0xFF00, 0xFF01)
CANCEL = 0xFE00
SOME_FAILED = 0xB000
OUT_OF_RESOURCES = 0xA700
# PS3.8 numbers presentation contexts with odd IDs from 1 to 255: 128 at most.
MAX_CONTEXTS = 128
# During a retrieve the PACS may be silent for a long time: a PACS that sends no pending
# responses says nothing until the end of a C-MOVE, and one C-STORE of a C-GET is a single
# message however large the object. It may stay silent at least this long (seconds).
MIN_IDLE_SECONDS = 300.0

_STORAGE = "1.2.840.10008.5.1.4.1.1."
# Storage SOP classes a C-GET proposes first (PS3.4 Annex B.5): the modalities and RT
# objects we de-identify; pynetdicom's list fills the remaining contexts.
ESSENTIAL_STORAGE_CLASSES: tuple[str, ...] = tuple(_STORAGE + suffix for suffix in (
    "2", "2.1", "2.2",                          # CT, Enhanced CT, Legacy Converted CT
    "4", "4.1", "4.4",                          # MR, Enhanced MR, Legacy Converted MR
    "481.1", "481.2", "481.3", "481.4", "481.5",  # RT Image, Dose, Structure Set, Beams
    "481.6", "481.7", "481.8", "481.9",         # RT Brachy, Summary, Ion Plan, Ion Beams
    "7", "7.1", "7.2", "7.3", "7.4",            # Secondary Capture (single and multi-frame)
    "6.1", "3.1",                               # US, US Multi-frame
    "1", "1.1", "1.1.1", "1.2", "1.2.1",        # CR, DX, MG
    "13.1.3",                                   # Breast Tomosynthesis
    "128", "128.1", "130", "20",                # PET, Legacy Converted PET, Enhanced PET, NM
    "12.1", "12.1.1",                           # XA, Enhanced XA
    "88.11", "88.22", "88.33", "88.34", "88.59", "88.67",  # SR, KOS, Dose SR
    "66", "66.1", "66.3", "66.4",               # Raw Data, Registration, Segmentation
    "11.1", "104.1", "77.1.4",                  # Presentation State, PDF, VL Photographic
))


def default_storage_classes() -> list[str]:
    """The storage SOP classes a C-GET proposes without ``sop_classes``: ours first, then
    pynetdicom's, as many as fit beside the C-GET context."""
    classes = list(ESSENTIAL_STORAGE_CLASSES)
    for context in StoragePresentationContexts:
        if context.abstract_syntax not in classes:
            classes.append(str(context.abstract_syntax))
    return classes[:MAX_CONTEXTS - 1]


@dataclass(frozen=True)
class RetrieveProgress:
    """The sub-operation counts of a pending response."""

    remaining: int
    completed: int
    failed: int
    warning: int


@dataclass(frozen=True)
class RetrieveOutcome:
    """The final response of a retrieve: status, sub-operation counts, the Failed SOP
    Instance UID List when the PACS sent one, and an operator's explanation (``""`` on
    success; never PHI)."""

    status: int
    remaining: int
    completed: int
    failed: int
    warning: int
    failed_instances: tuple[str, ...]
    message: str

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS


def _identifier(study_uid: str, series_uid: str | None,
                sop_uids: Sequence[str] | None) -> Dataset:
    ds = Dataset()
    if not study_uid:
        raise ValueError("a retrieve needs a study UID")
    ds.StudyInstanceUID = study_uid
    if sop_uids is not None:
        if not series_uid:
            raise ValueError("an instance-level retrieve needs the series UID")
        if not sop_uids:
            raise ValueError("an instance-level retrieve needs at least one SOP Instance UID")
        ds.QueryRetrieveLevel = "IMAGE"
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = list(sop_uids)
    elif series_uid:
        ds.QueryRetrieveLevel = "SERIES"
        ds.SeriesInstanceUID = series_uid
    else:
        ds.QueryRetrieveLevel = "STUDY"
    return ds


def _counts(status: Dataset, previous: RetrieveProgress) -> RetrieveProgress:
    def number(keyword: str, default: int) -> int:
        value = status.get(keyword)
        return default if value is None else int(value)

    return RetrieveProgress(
        remaining=number("NumberOfRemainingSuboperations", previous.remaining),
        completed=number("NumberOfCompletedSuboperations", previous.completed),
        failed=number("NumberOfFailedSuboperations", previous.failed),
        warning=number("NumberOfWarningSuboperations", previous.warning),
    )


def _total(counts: RetrieveProgress) -> int:
    return counts.remaining + counts.completed + counts.failed + counts.warning


def _final_counts(status: Dataset, last: RetrieveProgress) -> RetrieveProgress:
    """The counts of a final response, never fewer than the last pending response had done:
    a final response may leave counts out (Remaining always), and Orthanc's final failure
    says 0 for all however many instances it had sent."""
    final = _counts(status, replace(last, remaining=0))
    return RetrieveProgress(
        remaining=final.remaining,
        completed=max(final.completed, last.completed),
        failed=max(final.failed, last.failed),
        warning=max(final.warning, last.warning),
    )


def _failed_instances(identifier: Dataset | None) -> tuple[str, ...]:
    value = None if identifier is None else identifier.get("FailedSOPInstanceUIDList")
    if value is None or value == "":
        return ()
    items = [value] if isinstance(value, str) else list(value)
    return tuple(str(item) for item in items if str(item))


def _message(peer: Peer, code: int, counts: RetrieveProgress, destination: str | None,
             announced: int = 0) -> str:
    """What an operator should know of a final status (``destination``: of a C-MOVE;
    ``announced``: the number of sub-operations the pending responses announced)."""
    table = QR_MOVE_SERVICE_CLASS_STATUS if destination else QR_GET_SERVICE_CLASS_STATUS
    done = counts.completed + counts.failed + counts.warning
    total = max(done + counts.remaining, announced)
    tally = f"{counts.completed} of {total} instances sent" if total else "no instance sent"
    where = f"the PACS {peer.describe()}"
    if code == SUCCESS:
        return ""
    if code == CANCEL:
        return f"the retrieve was cancelled (status FE00): {tally}"
    if code in (OUT_OF_RESOURCES, 0xA701, 0xA702):
        return f"{where} is out of resources ({status_text(code, table)}): {tally}"
    if code == 0xA801 and destination:
        return (f"{where} does not know the move destination AE title {destination} "
                f"(status A801): add it to the PACS with our host and port")
    if 0xB000 <= code <= 0xBFFF:
        return (f"{counts.failed + counts.warning} of {total} sub-operations failed or had "
                f"warnings ({status_text(code, table)}); {counts.completed} completed")
    if 0xC000 <= code <= 0xCFFF and destination:
        # Orthanc answers C000 for every failure of a C-MOVE: unknown destination,
        # destination down or refusing, connection to it cut, no such study.
        if done == 0:
            return (f"{where} could not send the study (status {code:04X}, no instance "
                    f"sent): check that it knows the destination AE title {destination} "
                    f"with our host and port, that our Storage SCP is running, and that "
                    f"the PACS holds the study")
        return (f"{where} stopped sending the study (status {code:04X}, {tally}): check "
                f"that the destination {destination} and the network to it are up")
    return f"{where} refused the retrieve ({status_text(code, table)}): {tally}"


class _Watchdog:
    """Aborts an association when an operation outlives ``seconds``."""

    def __init__(self, assoc: Association, seconds: float) -> None:
        self.fired = False
        self._assoc = assoc
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        abort(self._assoc)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()


def _follow(
    peer: Peer,
    assoc: Association,
    responses: Iterator[tuple[Dataset, Dataset | None]],
    on_progress: Callable[[RetrieveProgress], None] | None,
    timeout: float,
    destination: str | None,
) -> RetrieveOutcome:
    """Read the responses of a C-MOVE/C-GET up to the final one, within ``timeout``."""
    counts = RetrieveProgress(0, 0, 0, 0)
    clock = Stopwatch()
    late = OperationTimeout(f"the retrieve from {peer.describe()} did not finish within "
                            f"{timeout:g} s; it was aborted")
    with _Watchdog(assoc, timeout) as watchdog:
        for status, identifier in responses:
            waited = clock.lap()
            if watchdog.fired:
                raise late
            if "Status" not in status:
                raise lost(peer, waited, assoc.dimse_timeout)
            code = int(status.Status)
            if code in PENDING:
                counts = _counts(status, counts)
                if on_progress is not None:
                    on_progress(counts)
                continue
            final = _final_counts(status, counts)
            return RetrieveOutcome(
                status=code, remaining=final.remaining, completed=final.completed,
                failed=final.failed, warning=final.warning,
                failed_instances=_failed_instances(identifier),
                message=_message(peer, code, final, destination, _total(counts)),
            )
        if watchdog.fired:
            raise late
    raise lost(peer, clock.lap(), assoc.dimse_timeout)


def _allow_silence(peer: Peer, assoc: Association) -> None:
    """Let the PACS be silent longer than ``peer.timeout`` during a retrieve (see
    :data:`MIN_IDLE_SECONDS`); the retrieve's own timeout still bounds the whole."""
    idle = max(peer.timeout, MIN_IDLE_SECONDS)
    assoc.dimse_timeout = idle
    assoc.network_timeout = idle


def move(
    peer: Peer,
    destination_aet: str,
    study_uid: str,
    series_uid: str | None = None,
    sop_uids: Sequence[str] | None = None,
    on_progress: Callable[[RetrieveProgress], None] | None = None,
    timeout: float = 3600.0,
) -> RetrieveOutcome:
    """C-MOVE a study (or one series, or instances of a series) from ``peer`` to the AE
    ``destination_aet``, which the PACS must know with its host and port. The outcome
    carries the final status and counts; only problems of the association, and a move
    that does not end within ``timeout`` seconds (:class:`OperationTimeout`), are
    raised."""
    if not destination_aet.strip() or len(destination_aet) > 16:
        raise ValueError("the move destination must be an AE title of 1 to 16 characters")
    identifier = _identifier(study_uid, series_uid, sop_uids)
    ae = new_ae(peer)
    ae.add_requested_context(MOVE_MODEL)
    with open_association(peer, ae) as assoc:
        _allow_silence(peer, assoc)
        responses = assoc.send_c_move(identifier, destination_aet, MOVE_MODEL)
        return _follow(peer, assoc, responses, on_progress, timeout, destination_aet)


def _spooled_store(store: Callable[[evt.Event], int]) -> Callable[[evt.Event], int]:
    """``store`` as an EVT_C_STORE handler that deletes the received data set's temporary
    file afterwards (pynetdicom leaves it as an SCU), and answers Out of Resources when
    ``store`` raises (logging the error's type only: its text may quote the object)."""

    def handler(event: evt.Event) -> int:
        try:
            return int(store(event))
        except Exception as exc:
            log.error("a retrieved object could not be stored: %s", type(exc).__name__)
            return OUT_OF_RESOURCES
        finally:
            _delete_spool(getattr(event.request, "_dataset_file", None))

    return handler


def _delete_spool(spool: Any) -> None:
    if spool is not None:
        with contextlib.suppress(OSError, ValueError):
            spool.close()
        with contextlib.suppress(OSError):
            os.unlink(spool.name)


def _delete_half_received(assoc: Association) -> None:
    """Delete the temporary file of a data set whose receipt the end of the association
    cut short, and of any received but never handed over."""
    message = assoc.dimse.message
    _delete_spool(getattr(message, "_data_set_file", None) if message is not None else None)
    for _, primitive in list(assoc.dimse.msg_queue.queue):
        _delete_spool(getattr(primitive, "_dataset_file", None))


def get(
    peer: Peer,
    study_uid: str,
    store: Callable[[evt.Event], int],
    series_uid: str | None = None,
    sop_uids: Sequence[str] | None = None,
    on_progress: Callable[[RetrieveProgress], None] | None = None,
    timeout: float = 3600.0,
    sop_classes: Sequence[str] | None = None,
) -> RetrieveOutcome:
    """C-GET a study (or one series, or instances of a series) from ``peer`` over our own
    association, for a PACS that cannot reach our Storage SCP. Each object is written to a
    temporary file and handed to ``store`` (its ``event.dataset_path``; the file is deleted
    when ``store`` returns, so move it away to keep it), whose return value is the C-STORE
    status answered. ``sop_classes`` are the storage SOP classes accepted (at most 127);
    outcome and errors as for :func:`move`."""
    classes = list(dict.fromkeys(sop_classes)) if sop_classes else default_storage_classes()
    if len(classes) > MAX_CONTEXTS - 1:
        raise ValueError(f"a C-GET can accept at most {MAX_CONTEXTS - 1} storage SOP classes")
    identifier = _identifier(study_uid, series_uid, sop_uids)
    _config.STORE_RECV_CHUNKED_DATASET = True
    ae = new_ae(peer)
    ae.add_requested_context(GET_MODEL)
    for sop_class in classes:
        ae.add_requested_context(sop_class)
    roles = [build_role(sop_class, scp_role=True) for sop_class in classes]
    handlers = [(evt.EVT_C_STORE, _spooled_store(store))]
    with open_association(peer, ae, ext_neg=roles, evt_handlers=handlers) as assoc:
        _allow_silence(peer, assoc)
        responses = assoc.send_c_get(identifier, GET_MODEL)
        try:
            return _follow(peer, assoc, responses, on_progress, timeout, None)
        except BaseException:
            abort(assoc)
            _delete_half_received(assoc)
            raise

