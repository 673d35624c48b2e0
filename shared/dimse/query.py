"""Asking a PACS what it holds (C-FIND in the Study Root model) and whether it answers at all
(C-ECHO).

An operator chooses studies by what they know of them (patient, date, accession, modality),
and a retrieve job needs to know exactly which instances the PACS holds of a study, to
check that everything arrived. PACS differ in what they fill in: the counts and modalities of
a study are derived from a series-level query where the study-level answer lacks them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from pynetdicom.status import QR_FIND_SERVICE_CLASS_STATUS, VERIFICATION_SERVICE_CLASS_STATUS

from shared.dimse.peer import (
    DimseError,
    Peer,
    PeerFailed,
    Stopwatch,
    TooManyMatches,
    lost,
    new_ae,
    open_association,
    status_text,
)

FIND_MODEL = StudyRootQueryRetrieveInformationModelFind
PENDING = (0xFF00, 0xFF01)
SUCCESS = 0x0000
CANCEL = 0xFE00
RESPONSE_LIMIT_REACHED = 0xB001

_DATE_RANGE = re.compile(r"(\d{8})?(-(\d{8})?)?")


def _check_date(value: str) -> None:
    if value == "":
        return
    match = _DATE_RANGE.fullmatch(value)
    if match is None or value == "-":
        raise ValueError(f"study date {value!r} is not YYYYMMDD, YYYYMMDD-YYYYMMDD, "
                         "-YYYYMMDD or YYYYMMDD-")
    bounds = [part for part in (match.group(1), match.group(3)) if part]
    for part in bounds:
        try:
            dt.datetime.strptime(part, "%Y%m%d")
        except ValueError:
            raise ValueError(f"study date {value!r}: {part} is not a date") from None
    if match.group(1) and match.group(3) and match.group(1) > match.group(3):
        raise ValueError(f"study date {value!r}: the range ends before it starts")


@dataclass(frozen=True)
class StudyQuery:
    """What an operator knows of the studies wanted; empty fields match anything. Name, ID
    and accession may hold the wildcards ``*`` and ``?``; ``study_date`` is ``YYYYMMDD`` or
    a range (``YYYYMMDD-YYYYMMDD``, ``-YYYYMMDD``, ``YYYYMMDD-``)."""

    patient_name: str = ""
    patient_id: str = ""
    study_date: str = ""
    accession: str = ""
    modality: str = ""
    study_uid: str = ""

    def __post_init__(self) -> None:
        _check_date(self.study_date)
        for field in ("patient_name", "patient_id", "accession", "modality", "study_uid"):
            if "\\" in getattr(self, field):
                raise ValueError(f"{field.replace('_', ' ')} may not contain a backslash")

    def identifier(self) -> Dataset:
        """The STUDY-level C-FIND identifier: our matching keys and the return keys."""
        ds = Dataset()
        if not all(value.isascii() for value in (self.patient_name, self.patient_id,
                                                  self.accession)):
            ds.SpecificCharacterSet = "ISO_IR 192"
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientName = self.patient_name
        ds.PatientID = self.patient_id
        ds.StudyDate = self.study_date
        ds.AccessionNumber = self.accession
        ds.ModalitiesInStudy = self.modality.upper()
        ds.NumberOfStudyRelatedSeries = None
        ds.NumberOfStudyRelatedInstances = None
        ds.StudyDescription = ""
        ds.StudyInstanceUID = self.study_uid
        return ds


@dataclass(frozen=True)
class StudyMatch:
    """One study the PACS holds; ``series_count``/``instance_count`` are ``None`` when the
    PACS gave no count and none could be derived."""

    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    accession: str
    modalities: tuple[str, ...]
    series_count: int | None
    instance_count: int | None
    description: str


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _values(ds: Dataset, keyword: str) -> tuple[str, ...]:
    value = ds.get(keyword)
    if value is None or value == "":
        return ()
    items = value if isinstance(value, MultiValue | list | tuple) else str(value).split("\\")
    return tuple(sorted({str(item).strip() for item in items if str(item).strip()}))


def _count(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _responses(peer: Peer, assoc: Association, identifier: Dataset, what: str,
               limit: int | None = None) -> Iterator[Dataset]:
    """The matches of one C-FIND, each status checked; past ``limit`` matches the query
    is cancelled and :class:`TooManyMatches` raised (the caller's association is then
    aborted, as for every error)."""
    clock = Stopwatch()
    matches = 0
    responses = assoc.send_c_find(identifier, FIND_MODEL)
    for status, answer in responses:
        waited = clock.lap()
        if "Status" not in status:
            raise lost(peer, waited)
        code = int(status.Status)
        if code in PENDING:
            if answer is None:
                raise DimseError(f"the PACS {peer.describe()} sent a {what} match we could "
                                 "not decode")
            matches += 1
            if limit is not None and matches > limit:
                _cancel(assoc)
                raise TooManyMatches(f"more than {limit} {what} match; narrow the query")
            yield answer
        elif code == SUCCESS:
            return
        elif code == RESPONSE_LIMIT_REACHED:
            raise TooManyMatches(f"the PACS {peer.describe()} stopped at its own limit after "
                                 f"{matches} {what} (status B001); narrow the query")
        elif code == CANCEL:
            raise PeerFailed(f"the PACS {peer.describe()} cancelled the {what} query "
                             "(status FE00)", code)
        else:
            raise PeerFailed(f"the PACS {peer.describe()} refused the {what} query "
                             f"({status_text(code, QR_FIND_SERVICE_CLASS_STATUS)})", code)
    raise lost(peer, clock.lap())


def _cancel(assoc: Association) -> None:
    """Ask the PACS to stop matching (C-CANCEL) before the association is aborted."""
    if assoc.is_established:
        assoc.send_c_cancel(1, query_model=FIND_MODEL)


def _series(peer: Peer, assoc: Association, study_uid: str) -> list[Dataset]:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = ""
    ds.Modality = ""
    ds.NumberOfSeriesRelatedInstances = None
    return list(_responses(peer, assoc, ds, "series"))


def _match(peer: Peer, assoc: Association, answer: Dataset) -> StudyMatch:
    study_uid = _text(answer, "StudyInstanceUID")
    modalities = _values(answer, "ModalitiesInStudy")
    series_count = _count(answer, "NumberOfStudyRelatedSeries")
    instance_count = _count(answer, "NumberOfStudyRelatedInstances")
    if study_uid and (not modalities or series_count is None or instance_count is None):
        series = _series(peer, assoc, study_uid)
        modalities = modalities or tuple(sorted({m for s in series
                                                 if (m := _text(s, "Modality"))}))
        if series_count is None:
            series_count = len(series)
        if instance_count is None:
            counts = [_count(s, "NumberOfSeriesRelatedInstances") for s in series]
            if all(c is not None for c in counts):
                instance_count = sum(c for c in counts if c is not None)
    return StudyMatch(
        study_uid=study_uid,
        patient_name=_text(answer, "PatientName"),
        patient_id=_text(answer, "PatientID"),
        study_date=_text(answer, "StudyDate"),
        accession=_text(answer, "AccessionNumber"),
        modalities=modalities,
        series_count=series_count,
        instance_count=instance_count,
        description=_text(answer, "StudyDescription"),
    )


def _wanted(match: StudyMatch, modality: str) -> bool:
    """Whether ``match`` has the modality asked for (a PACS that does not match on
    ModalitiesInStudy answers every study; wildcards are left to the PACS)."""
    if not modality or "*" in modality or "?" in modality or not match.modalities:
        return True
    return modality.upper() in {m.upper() for m in match.modalities}


def find_studies(peer: Peer, query: StudyQuery, max_results: int = 1000) -> list[StudyMatch]:
    """The studies of ``peer`` matching ``query``, sorted by study date then UID, so that an
    operator can choose what to retrieve. More than ``max_results`` is
    :class:`TooManyMatches` (the query is cancelled), rather than a truncated list that
    looks complete; counts and modalities the PACS leaves out are derived from its series."""
    ae = new_ae(peer)
    ae.add_requested_context(FIND_MODEL)
    with open_association(peer, ae) as assoc:
        answers = list(_responses(peer, assoc, query.identifier(), "studies", max_results))
        matches = [_match(peer, assoc, answer) for answer in answers]
    matches = [m for m in matches if _wanted(m, query.modality)]
    return sorted(matches, key=lambda m: (m.study_date, m.study_uid))


def find_instances(peer: Peer, study_uid: str) -> dict[str, set[str]]:
    """What ``peer`` holds of a study, series UID -> SOP Instance UIDs, so that a retrieve
    can be checked (or resumed) instance by instance. An unknown study gives ``{}``."""
    ae = new_ae(peer)
    ae.add_requested_context(FIND_MODEL)
    held: dict[str, set[str]] = {}
    with open_association(peer, ae) as assoc:
        for series in _series(peer, assoc, study_uid):
            series_uid = _text(series, "SeriesInstanceUID")
            if not series_uid:
                continue
            ds = Dataset()
            ds.QueryRetrieveLevel = "IMAGE"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = ""
            instances = held.setdefault(series_uid, set())
            for answer in _responses(peer, assoc, ds, "instances"):
                if uid := _text(answer, "SOPInstanceUID"):
                    instances.add(uid)
    return held


def echo(peer: Peer) -> None:
    """C-ECHO ``peer``: the check an operator runs after configuring a PACS; any problem
    (unreachable, rejected, a failure status) is raised as a :class:`DimseError`."""
    ae = new_ae(peer)
    ae.add_requested_context(Verification)
    with open_association(peer, ae) as assoc:
        clock = Stopwatch()
        status = assoc.send_c_echo()
        if status is None or "Status" not in status:
            raise lost(peer, clock.lap())
        code = int(status.Status)
        if code != SUCCESS:
            raise PeerFailed(f"the PACS {peer.describe()} answered the C-ECHO with "
                             f"{status_text(code, VERIFICATION_SERVICE_CLASS_STATUS)}", code)
