"""The query/retrieve SCUs (shared/dimse) against a real PACS (Orthanc) and a real Storage
SCP (DCMTK's storescp): what C-FIND matches and counts, that C-MOVE and C-GET bring exactly
the instances asked for, and how each failure (PACS down, wrong AE title, unknown or
unreachable destination, a transfer cut short, a retrieve that outlives its time) reaches the
caller, always without PHI."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from shared.dimse.peer import (
    AssociationRefused,
    ConnectionLost,
    DimseError,
    OperationTimeout,
    Peer,
    PeerFailed,
    PeerUnreachable,
    TooManyMatches,
)
from shared.dimse.query import FIND_MODEL, StudyQuery, echo, find_instances, find_studies
from shared.dimse.retrieve import MOVE_MODEL, RetrieveProgress, get, move
from tests.orthanc import CuttingProxy, Orthanc, orthanc_available, orthanc_factory  # noqa: F401
from tests.s3_server import free_port
from tests.synth import make_ct_series, make_rt_set, phi_for, write

STORESCP = Path("/usr/bin/storescp")
DESTINATION = "ANONSCP"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

OrthancFactory = Callable[..., Orthanc]


# ---- the studies on the PACS ------------------------------------------------------------


@dataclass
class Study:
    """One study as uploaded: its datasets by series, and the values queries match."""

    uid: str
    patient_index: int
    name: str
    date: str
    modalities: tuple[str, ...]
    series: dict[str, set[str]] = field(default_factory=dict)

    @property
    def instances(self) -> int:
        return sum(len(sops) for sops in self.series.values())


def _add(study: Study, datasets: list[Dataset]) -> list[Dataset]:
    for ds in datasets:
        ds.PatientName = study.name
        ds.StudyDate = study.date
        study.series.setdefault(str(ds.SeriesInstanceUID), set()).add(str(ds.SOPInstanceUID))
    return datasets


def make_studies() -> tuple[dict[str, Study], list[Dataset]]:
    """A: DOE^JOHN, 2019, two CT series (3 + 2); B: DOE^JANE, 2020, one MR series (2);
    C: planted name, 2021, an RT set (2 CT, RTSTRUCT, RTPLAN, RTDOSE)."""
    a = Study(str(make_ct_series(1, patient_index=1)[0].StudyInstanceUID), 1, "DOE^JOHN",
              "20190314", ("CT",))
    b = Study(str(make_ct_series(1, patient_index=2)[0].StudyInstanceUID), 2, "DOE^JANE",
              "20200101", ("MR",))
    rt = make_rt_set(n_ct=2, n_rois=1, n_beams=1, patient_index=3)
    c = Study(str(rt.ct[0].StudyInstanceUID), 3, phi_for(3).patient_name, "20210615",
              ("CT", "RTDOSE", "RTPLAN", "RTSTRUCT"))
    datasets = _add(a, make_ct_series(3, patient_index=1, series_number=1)
                    + make_ct_series(2, patient_index=1, series_number=2))
    mr = make_ct_series(2, patient_index=2)
    for ds in mr:
        ds.Modality = "MR"
    datasets += _add(b, mr) + _add(c, rt.all())
    return {"A": a, "B": b, "C": c}, datasets


def upload(orthanc: Orthanc, datasets: list[Dataset], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, ds in enumerate(datasets):
        path = folder / f"{i}.dcm"
        write(ds, path)
        files.append(path)
    orthanc.upload(files)


def peer_of(orthanc: Orthanc, called_aet: str | None = None, timeout: float = 10.0) -> Peer:
    return Peer(orthanc.host, orthanc.dicom_port, called_aet or orthanc.aet, "QRTEST",
                timeout=timeout)


def assert_no_phi(text: str, *studies: Study) -> None:
    for study in studies:
        phi = phi_for(study.patient_index)
        for value in (study.name, phi.patient_id, phi.accession_number, study.uid):
            assert value not in text, f"PHI {value!r} in {text!r}"


# ---- a Storage SCP as C-MOVE destination -----------------------------------------------


class StoreSCP:
    """DCMTK's storescp on a free port, writing what it receives to ``folder``."""

    def __init__(self, folder: Path, aet: str = DESTINATION) -> None:
        self.folder = folder
        self.aet = aet
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(STORESCP), "-aet", aet, "-od", str(folder), "+xa", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("storescp did not start")

    def received(self) -> set[str]:
        return {str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
                for path in self.folder.iterdir() if path.is_file()}

    def clear(self) -> None:
        for path in self.folder.iterdir():
            path.unlink()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    if not STORESCP.exists():
        pytest.fail("DCMTK is not installed: run `make system-packages` (Debian: dcmtk)")
    scp = StoreSCP(tmp_path / "received")
    try:
        yield scp
    finally:
        scp.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts a TCP connection and never says anything on it."""
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
    try:
        yield silent.getsockname()[1]
    finally:
        silent.close()
        for connection in held:
            connection.close()


@dataclass
class Pacs:
    orthanc: Orthanc
    peer: Peer
    studies: dict[str, Study]


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    """One Orthanc holding studies A, B and C for the tests that only read (queries, C-GET,
    C-MOVE to a destination each test sets); uploaded newest first, so that the order of
    the answers is not already the order by date."""
    if not orthanc_available():
        pytest.fail("Orthanc is not installed: run `make system-packages` (Debian: orthanc)")
    folder = tmp_path_factory.mktemp("library")
    orthanc = Orthanc(folder / "orthanc").start()
    try:
        studies, datasets = make_studies()
        upload(orthanc, datasets[::-1], folder / "upload")
        yield Pacs(orthanc, peer_of(orthanc), studies)
    finally:
        orthanc.stop(kill=True)


@pytest.fixture
def pacs(library: Pacs, storescp: StoreSCP) -> Pacs:
    """The library, knowing this test's storescp as ``ANONSCP``."""
    library.orthanc.set_modality(DESTINATION, "127.0.0.1", storescp.port)
    return library


# ---- C-FIND ------------------------------------------------------------------------------

QUERIES: list[tuple[str, dict[str, str], list[str]]] = [
    ("everything", {}, ["A", "B", "C"]),
    ("patient ID", {"patient_id": phi_for(1).patient_id}, ["A"]),
    ("name prefix", {"patient_name": "DOE*"}, ["A", "B"]),
    ("name one character", {"patient_name": "DOE^JAN?"}, ["B"]),
    ("name first character", {"patient_name": "?OE^JOHN"}, ["A"]),
    ("date", {"study_date": "20200101"}, ["B"]),
    ("date range", {"study_date": "20190101-20201231"}, ["A", "B"]),
    ("from a date", {"study_date": "20200102-"}, ["C"]),
    ("up to a date", {"study_date": "-20191231"}, ["A"]),
    ("accession", {"accession": phi_for(3).accession_number}, ["C"]),
    ("modality", {"modality": "MR"}, ["B"]),
    ("modality of an RT set", {"modality": "RTPLAN"}, ["C"]),
    ("name and date", {"patient_name": "DOE*", "study_date": "-20191231"}, ["A"]),
    ("nothing matches", {"patient_id": "NOSUCHID"}, []),
]


@pytest.mark.parametrize(("fields", "expected"), [q[1:] for q in QUERIES],
                         ids=[q[0] for q in QUERIES])
def test_find_studies_matches_exactly(library: Pacs, fields: dict[str, str],
                                      expected: list[str]) -> None:
    matches = find_studies(library.peer, StudyQuery(**fields))
    studies = [library.studies[key] for key in expected]
    assert [m.study_uid for m in matches] == [s.uid for s in studies]  # sorted by date
    for match, study in zip(matches, studies, strict=True):
        assert match.patient_name == study.name
        assert match.patient_id == phi_for(study.patient_index).patient_id
        assert match.accession == phi_for(study.patient_index).accession_number
        assert match.study_date == study.date
        assert match.modalities == study.modalities
        assert match.series_count == len(study.series)
        assert match.instance_count == study.instances
        assert match.description


def test_find_study_by_uid(library: Pacs) -> None:
    study = library.studies["C"]
    (match,) = find_studies(library.peer, StudyQuery(study_uid=study.uid))
    assert (match.study_uid, match.series_count, match.instance_count) == (study.uid, 4, 5)


def test_counts_derived_when_the_pacs_gives_none(library: Pacs,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A PACS that fills neither ModalitiesInStudy nor the counts (here: Orthanc not asked
    for them): they come from a series-level query."""
    asked = StudyQuery.identifier

    def bare(query: StudyQuery) -> Dataset:
        ds = asked(query)
        for keyword in ("ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                        "NumberOfStudyRelatedInstances"):
            delattr(ds, keyword)
        return ds

    monkeypatch.setattr(StudyQuery, "identifier", bare)
    matches = find_studies(library.peer, StudyQuery())
    studies = sorted(library.studies.values(), key=lambda s: s.date)
    assert [(m.study_uid, m.modalities, m.series_count, m.instance_count) for m in matches] \
        == [(s.uid, s.modalities, len(s.series), s.instances) for s in studies]


def test_more_matches_than_allowed(library: Pacs) -> None:
    with pytest.raises(TooManyMatches) as caught:
        find_studies(library.peer, StudyQuery(patient_name="*"), max_results=2)
    assert "more than 2 studies" in str(caught.value)
    assert_no_phi(str(caught.value), *library.studies.values())
    # The cancelled query left the PACS able to answer the next one.
    assert len(find_studies(library.peer, StudyQuery(), max_results=3)) == 3


@pytest.mark.parametrize("date", ["2019-03-14", "20191332", "2019031", "20200101-20190101",
                                  "-", "20190314--", "abc", "20190314 "])
def test_invalid_study_date(date: str) -> None:
    with pytest.raises(ValueError, match="study date"):
        StudyQuery(study_date=date)


def test_valid_study_dates() -> None:
    for date in ("", "20190314", "20190314-20190314", "-20190314", "20190314-"):
        assert StudyQuery(study_date=date).study_date == date


def test_find_instances_is_what_was_uploaded(library: Pacs) -> None:
    for study in library.studies.values():
        assert find_instances(library.peer, study.uid) == study.series
    assert find_instances(library.peer, "1.2.3.4.5") == {}


def test_echo(library: Pacs) -> None:
    echo(library.peer)


# ---- C-MOVE ------------------------------------------------------------------------------


def test_move_study(pacs: Pacs, storescp: StoreSCP) -> None:
    study = pacs.studies["A"]
    progress: list[RetrieveProgress] = []
    outcome = move(pacs.peer, DESTINATION, study.uid, on_progress=progress.append)
    assert outcome.succeeded, outcome.message
    assert (outcome.completed, outcome.failed, outcome.warning) == (study.instances, 0, 0)
    assert outcome.message == ""
    assert storescp.received() == set().union(*study.series.values())
    assert progress, "no progress reported"
    assert [p.completed for p in progress] == sorted(p.completed for p in progress)
    assert all(p.completed + p.remaining == study.instances for p in progress)


def test_move_series_and_instances(pacs: Pacs, storescp: StoreSCP) -> None:
    study = pacs.studies["A"]
    series_uid, sops = max(study.series.items(), key=lambda item: len(item[1]))
    other = set().union(*(s for uid, s in study.series.items() if uid != series_uid))
    outcome = move(pacs.peer, DESTINATION, study.uid, series_uid=series_uid)
    assert outcome.succeeded and outcome.completed == len(sops)
    assert storescp.received() == sops and not (storescp.received() & other)

    storescp.clear()
    wanted = sorted(sops)[:2]
    outcome = move(pacs.peer, DESTINATION, study.uid, series_uid=series_uid, sop_uids=wanted)
    assert outcome.succeeded and outcome.completed == 2
    assert storescp.received() == set(wanted)


def test_move_arguments_are_checked(pacs: Pacs) -> None:
    study = pacs.studies["A"]
    with pytest.raises(ValueError):
        move(pacs.peer, DESTINATION, study.uid, sop_uids=["1.2.3"])
    with pytest.raises(ValueError):
        move(pacs.peer, DESTINATION, study.uid, series_uid="1.2", sop_uids=[])
    with pytest.raises(ValueError):
        move(pacs.peer, "A" * 17, study.uid)


def test_move_to_unknown_destination(pacs: Pacs, storescp: StoreSCP) -> None:
    study = pacs.studies["A"]
    outcome = move(pacs.peer, "NOSUCHAE", study.uid)
    assert not outcome.succeeded and outcome.completed == 0
    assert "NOSUCHAE" in outcome.message and f"{outcome.status:04X}" in outcome.message
    assert_no_phi(outcome.message, *pacs.studies.values())
    assert storescp.received() == set()


def test_move_to_a_destination_that_is_down(pacs: Pacs, storescp: StoreSCP) -> None:
    storescp.stop()
    outcome = move(pacs.peer, DESTINATION, pacs.studies["B"].uid)
    assert not outcome.succeeded and outcome.completed == 0
    assert DESTINATION in outcome.message
    assert_no_phi(outcome.message, *pacs.studies.values())


def test_move_cut_short_then_completed(orthanc_factory: OrthancFactory,  # noqa: F811
                                       storescp: StoreSCP, tmp_path: Path) -> None:
    proxy = CuttingProxy(("127.0.0.1", storescp.port))
    try:
        orthanc = orthanc_factory(modalities={DESTINATION: ("127.0.0.1", proxy.port)})
        series = make_ct_series(8, patient_index=4)
        upload(orthanc, series, tmp_path / "upload")
        study_uid = str(series[0].StudyInstanceUID)
        everything = {str(ds.SOPInstanceUID) for ds in series}
        proxy.cut_after = 30_000  # a few of the 8 objects of ~10 kB
        cut = move(peer_of(orthanc), DESTINATION, study_uid)
        assert proxy.cuts == 1
        assert not cut.succeeded or cut.completed < len(series)
        assert cut.completed < len(series) and len(storescp.received()) < len(series)
        assert_no_phi(cut.message, Study(study_uid, 4, phi_for(4).patient_name, "", ()))

        again = move(peer_of(orthanc), DESTINATION, study_uid)
        assert again.succeeded and again.completed == len(series)
        assert storescp.received() == everything
    finally:
        proxy.close()


def test_move_that_outlives_its_timeout(orthanc_factory: OrthancFactory,  # noqa: F811
                                        silent_port: int, tmp_path: Path) -> None:
    """A destination that accepts the connection and never answers holds Orthanc's
    sub-operation; the move is aborted at its timeout."""
    orthanc = orthanc_factory(modalities={DESTINATION: ("127.0.0.1", silent_port)})
    series = make_ct_series(2, patient_index=5)
    upload(orthanc, series, tmp_path / "upload")
    started = time.monotonic()
    with pytest.raises(OperationTimeout) as caught:
        move(peer_of(orthanc), DESTINATION, str(series[0].StudyInstanceUID), timeout=1.0)
    assert time.monotonic() - started < 5
    assert "within 1 s" in str(caught.value)
    echo(peer_of(orthanc))  # the PACS still answers afterwards


# ---- C-GET -------------------------------------------------------------------------------


class Collector:
    """A C-STORE handler keeping a copy of each object received (as a caller ingests)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.spooled: list[Path] = []
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, event: evt.Event) -> int:
        path = Path(event.dataset_path)
        assert path.is_file()
        self.spooled.append(path)
        shutil.copyfile(path, self.folder / f"{len(self.spooled)}.dcm")
        return 0x0000

    def received(self) -> set[str]:
        return {str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
                for path in self.folder.iterdir()}


def test_get_study(library: Pacs, tmp_path: Path) -> None:
    study = library.studies["C"]  # CT and RT objects
    collector = Collector(tmp_path / "got")
    progress: list[RetrieveProgress] = []
    outcome = get(library.peer, study.uid, collector, on_progress=progress.append)
    assert outcome.succeeded, outcome.message
    assert outcome.completed == study.instances
    assert collector.received() == set().union(*study.series.values())
    assert progress
    assert not any(path.exists() for path in collector.spooled), "temporary files left"


def test_get_series(library: Pacs, tmp_path: Path) -> None:
    study = library.studies["A"]
    series_uid, sops = next(iter(study.series.items()))
    collector = Collector(tmp_path / "got")
    outcome = get(library.peer, study.uid, collector, series_uid=series_uid)
    assert outcome.succeeded and collector.received() == sops


def test_get_with_sop_classes_we_do_not_accept(library: Pacs, tmp_path: Path) -> None:
    """Only CT accepted: the RT objects cannot be sent, and the outcome says so."""
    study = library.studies["C"]
    collector = Collector(tmp_path / "got")
    outcome = get(library.peer, study.uid, collector, sop_classes=[CT_IMAGE_STORAGE])
    assert not outcome.succeeded and outcome.message
    assert outcome.completed < study.instances
    assert_no_phi(outcome.message, *library.studies.values())


def test_get_store_handler_failure(library: Pacs) -> None:
    def broken(_: evt.Event) -> int:
        raise RuntimeError(phi_for(2).patient_name)

    outcome = get(library.peer, library.studies["B"].uid, broken)
    assert not outcome.succeeded and outcome.completed == 0
    assert_no_phi(outcome.message, *library.studies.values())


# ---- association failures ----------------------------------------------------------------


def _every_operation(peer: Peer, study_uid: str) -> list[Callable[[], Any]]:
    return [
        lambda: echo(peer),
        lambda: find_studies(peer, StudyQuery(patient_name="DOE*")),
        lambda: find_instances(peer, study_uid),
        lambda: move(peer, DESTINATION, study_uid),
        lambda: get(peer, study_uid, lambda _: 0),
    ]


def test_pacs_down() -> None:
    peer = Peer("127.0.0.1", free_port(), "ORTHANC", "QRTEST", timeout=5)
    for operation in _every_operation(peer, "1.2.3.4"):
        with pytest.raises(PeerUnreachable) as caught:
            operation()
        message = str(caught.value)
        assert "ORTHANC" in message and str(peer.port) in message
        assert "connection refused" in message


def test_wrong_called_ae_title(library: Pacs) -> None:
    peer = peer_of(library.orthanc, called_aet="NOTORTHANC")
    for operation in _every_operation(peer, library.studies["A"].uid):
        with pytest.raises(AssociationRefused) as caught:
            operation()
        message = str(caught.value)
        assert "called AE title" in message and "NOTORTHANC" in message
        assert_no_phi(message, *library.studies.values())


def test_calling_ae_title_not_known(orthanc_factory: OrthancFactory) -> None:  # noqa: F811
    closed = {f"DicomAlwaysAllow{service}": False
              for service in ("Echo", "Find", "Move", "Get", "Store")}
    orthanc = orthanc_factory(extra=closed)
    with pytest.raises(AssociationRefused, match="calling AE title") as caught:
        find_studies(peer_of(orthanc), StudyQuery())
    assert "QRTEST" in str(caught.value)


def test_no_presentation_context_accepted(storescp: StoreSCP) -> None:
    """A Storage SCP offers no Query/Retrieve service."""
    peer = Peer("127.0.0.1", storescp.port, DESTINATION, "QRTEST", timeout=5)
    with pytest.raises(AssociationRefused, match="no presentation context"):
        find_studies(peer, StudyQuery())
    echo(peer)  # what it does offer works


def test_errors_are_dimse_errors() -> None:
    for error in (PeerUnreachable, AssociationRefused, TooManyMatches, OperationTimeout,
                  PeerFailed, ConnectionLost):
        assert issubclass(error, DimseError)


# ---- a PACS that misbehaves (a pynetdicom SCP answering as a test says) ------------------


FakeHandler = Callable[[evt.Event], Iterator[Any]]


@pytest.fixture
def fake_pacs() -> Iterator[Callable[..., Peer]]:
    """``fake_pacs(find=handler, move=handler, timeout=...)``: a Query/Retrieve SCP on a
    free port whose C-FIND and C-MOVE answers are the handlers' yields."""
    servers: list[Any] = []

    def start(find: FakeHandler | None = None, move: FakeHandler | None = None,
              timeout: float = 5.0) -> Peer:
        ae = AE(ae_title="FAKEPACS")
        for model in (FIND_MODEL, MOVE_MODEL, Verification):
            ae.add_supported_context(model)
        handlers = [(event, handler) for event, handler in
                    ((evt.EVT_C_FIND, find), (evt.EVT_C_MOVE, move)) if handler]
        port = free_port()
        servers.append(ae.start_server(("127.0.0.1", port), block=False,
                                       evt_handlers=handlers))
        return Peer("127.0.0.1", port, "FAKEPACS", "QRTEST", timeout=timeout)

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()


def test_find_failure_status(fake_pacs: Callable[..., Peer]) -> None:
    def refuse(_: evt.Event) -> Iterator[Any]:
        yield 0xA700, None

    with pytest.raises(PeerFailed) as caught:
        find_studies(fake_pacs(find=refuse), StudyQuery(patient_name="DOE*"))
    assert caught.value.status == 0xA700
    assert "FAKEPACS" in str(caught.value) and "A700" in str(caught.value)
    assert "DOE" not in str(caught.value)


def test_find_stopped_at_the_pacs_limit(fake_pacs: Callable[..., Peer]) -> None:
    def limited(_: evt.Event) -> Iterator[Any]:
        match = Dataset()
        match.QueryRetrieveLevel = "STUDY"
        match.StudyInstanceUID = "1.2.3"
        yield 0xFF00, match
        yield 0xB001, None

    with pytest.raises(TooManyMatches, match="B001"):
        find_studies(fake_pacs(find=limited), StudyQuery())


def test_pacs_that_stops_answering(fake_pacs: Callable[..., Peer]) -> None:
    def silent(_: evt.Event) -> Iterator[Any]:
        time.sleep(1.5)
        yield 0x0000, None

    started = time.monotonic()
    with pytest.raises(ConnectionLost, match=r"no response within 0\.5 s"):
        find_studies(fake_pacs(find=silent, timeout=0.5), StudyQuery())
    assert time.monotonic() - started < 1.5


def test_move_destination_unknown_status(fake_pacs: Callable[..., Peer]) -> None:
    def unknown(_: evt.Event) -> Iterator[Any]:
        yield None, None

    outcome = move(fake_pacs(move=unknown), DESTINATION, "1.2.3")
    assert outcome.status == 0xA801 and not outcome.succeeded
    assert "does not know the move destination AE title ANONSCP" in outcome.message


def test_pacs_dies_during_a_move(orthanc_factory: OrthancFactory,  # noqa: F811
                                 silent_port: int, tmp_path: Path) -> None:
    orthanc = orthanc_factory(modalities={DESTINATION: ("127.0.0.1", silent_port)})
    series = make_ct_series(2, patient_index=6)
    upload(orthanc, series, tmp_path / "upload")
    study_uid = str(series[0].StudyInstanceUID)
    threading.Timer(0.5, orthanc.stop, kwargs={"kill": True}).start()
    with pytest.raises(ConnectionLost) as caught:
        move(peer_of(orthanc), DESTINATION, study_uid, timeout=20)
    assert isinstance(caught.value, PeerUnreachable)
    assert "ORTHANC" in str(caught.value)
    assert_no_phi(str(caught.value), Study(study_uid, 6, phi_for(6).patient_name, "", ()))


def test_pacs_that_never_answers_the_association_request(silent_port: int) -> None:
    peer = Peer("127.0.0.1", silent_port, "ORTHANC", "QRTEST", timeout=0.5)
    with pytest.raises(PeerUnreachable, match="did not answer the association request"):
        echo(peer)


class ReplyCutter:
    """A TCP proxy to ``target`` that closes the connection once ``cut_after`` bytes have
    come back from the target (a PACS whose C-GET is cut in the middle of an object)."""

    def __init__(self, target: tuple[str, int], cut_after: int) -> None:
        self.target = target
        self.cut_after = cut_after
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self._listener.accept()
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, None),
                             daemon=True).start()
            self._pump(upstream, client, self.cut_after)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, budget: int | None) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if budget is not None:
                    data = data[:budget]
                    budget -= len(data)
                sink.sendall(data)
                if budget == 0:
                    break
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()


def test_get_cut_in_the_middle_of_an_object(orthanc_factory: OrthancFactory,  # noqa: F811
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The half-received object's temporary file is deleted, as are the whole ones."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    orthanc = orthanc_factory()
    series = make_ct_series(4, patient_index=7, rows=256, cols=256)  # 128 kB each
    upload(orthanc, series, tmp_path / "upload")
    cutter = ReplyCutter((orthanc.host, orthanc.dicom_port), cut_after=200_000)
    try:
        collector = Collector(tmp_path / "got")
        peer = Peer("127.0.0.1", cutter.port, orthanc.aet, "QRTEST", timeout=5)
        with pytest.raises(ConnectionLost):
            get(peer, str(series[0].StudyInstanceUID), collector)
        assert len(collector.spooled) == 1
        assert list(spool.iterdir()) == []
    finally:
        cutter.close()
