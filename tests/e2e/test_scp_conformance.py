"""Black-box conformance and robustness of the Storage SCP: only its TCP port is used, and
what is checked is what PS3.8 (upper layer), PS3.7 (DIMSE) and PS3.4 (Storage) say, not
the behaviour of one implementation. Peers are real: DCMTK's storescu and echoscu, the
pynetdicom SCU, Orthanc (C-STORE and C-MOVE sub-operations), and hand-made PDUs
(:mod:`tests.dul_support`) for what a library would not send.

"Nothing half kept" is checked the same way everywhere: once the associations have ended
and the relay has drained, no file is left under ``SCP_SPOOL_DIR`` and the incoming bucket
holds exactly the objects that were answered Success, complete."""

from __future__ import annotations

import asyncio
import io
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)
from pynetdicom import AE
from pynetdicom.pdu_primitives import AsynchronousOperationsWindowNegotiation
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    BasicTextSRStorage,
    ComprehensiveSRStorage,
    RTStructureSetStorage,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from shared.ingest import uid_digest
from shared.storage import S3Store
from tests import dul_support as dul
from tests import synth
from tests.conftest import SAMPLES
from tests.e2e.test_scp import chunked_send, echoscu  # noqa: F401 (a fixture)
from tests.orthanc import Orthanc
from tests.pipeline_support import Pipeline, ServiceProcess

pytestmark = pytest.mark.integration

SCP_AET = "ANONSCP"
TEST_FILES = SAMPLES / "pydicom" / "test_files"
COMPRESSED = {  # sample (SOP Instance UIDs all different) -> transfer syntax, storescu option
    # storescu proposes a compressed syntax when it is asked to (its option), first
    "SC_rgb_jpeg_dcmtk.dcm": ("1.2.840.10008.1.2.4.50", "-xy"),  # JPEG baseline
    "SC_rgb_dcmtk_+eb+cy+s4.dcm": ("1.2.840.10008.1.2.4.50", "-xy"),
    "SC_rgb_rle.dcm": ("1.2.840.10008.1.2.5", "-xr"),
    "GDCMJ2K_TextGBR.dcm": ("1.2.840.10008.1.2.4.90", "-xv"),  # JPEG 2000 lossless
    "JPEG2000.dcm": ("1.2.840.10008.1.2.4.91", "-xw"),  # JPEG 2000
}


# ---- helpers ---------------------------------------------------------------------------


def start(pipeline: Pipeline, tmp_path: Path, **env: str) -> tuple[ServiceProcess, Path]:
    """The SCP with its journal in a folder of the test's own."""
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    return pipeline.start("scp_ingest", SCP_SPOOL_DIR=str(spool), **env), spool


def left_in(spool: Path) -> list[Path]:
    return [p for p in spool.rglob("*") if p.is_file()]


def drained(pipeline: Pipeline, spool: Path, expected: int, timeout: float = 30) -> list[str]:
    """Wait until no file is left in the journal and the incoming bucket holds
    ``expected`` objects; its keys. A count above ``expected`` fails at once."""
    deadline = time.monotonic() + timeout
    while True:
        keys = pipeline.keys(pipeline.buckets.incoming)
        files = left_in(spool)
        assert len(keys) <= expected, f"{len(keys)} objects in the bucket, {expected} sent"
        if not files and len(keys) == expected:
            return keys
        if time.monotonic() > deadline:
            raise AssertionError(f"not drained: {len(keys)} of {expected} objects, "
                                 f"{len(files)} files left in the journal")
        time.sleep(0.2)


def stored_objects(pipeline: Pipeline) -> dict[str, bytes]:
    """Every object in the incoming bucket, by the digest of its SOP Instance UID."""

    async def fetch() -> dict[str, bytes]:
        s3 = pipeline.s3
        store = S3Store(s3.endpoint, s3.access_key, s3.secret_key, s3.secure)
        try:
            keys = await store.list_keys(pipeline.buckets.incoming)
            return {key.split("/")[-1].split(".")[0]: await store.get(
                pipeline.buckets.incoming, key) for key in keys}
        finally:
            await store.close()

    return asyncio.run(fetch())


def assert_complete(objects: dict[str, bytes], sent: dict[str, bytes]) -> None:
    """Each object of ``sent`` (SOP Instance UID -> its data set as sent) is in the bucket
    with exactly that data set, and nothing else is."""
    assert sorted(objects) == sorted(uid_digest(uid) for uid in sent)
    for uid, data_set in sent.items():
        assert dul.data_set_bytes(objects[uid_digest(uid)]) == data_set, uid


def sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def file_data_set(path: Path) -> bytes:
    return dul.data_set_bytes(path.read_bytes())


def raw_echo(pipeline: Pipeline) -> int:
    """A C-ECHO over a new association of hand-made PDUs; its status."""
    with dul.Peer(pipeline.scp_port) as peer:
        peer.associate([(1, dul.VERIFICATION, [dul.IMPLICIT_LE])])
        status = peer.echo().status
        peer.release()
    return status


def assert_still_serving(scp: ServiceProcess, pipeline: Pipeline) -> None:
    assert scp.process.poll() is None, scp.log.read_text()[-2000:]
    assert raw_echo(pipeline) == 0x0000
    assert "Traceback" not in scp.log.read_text()


def ct_file(folder: Path, rows: int = 64, count: int = 1, series: int = 7) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, ds in enumerate(synth.make_ct_series(count, rows=rows, cols=rows,
                                                series_number=series)):
        path = folder / f"ct{series}-{n:03d}.dcm"
        synth.write(ds, path)
        paths.append(path)
    return paths


def mixed_folder(folder: Path) -> list[Path]:
    """CT, MR, RT Structure Set and SR objects, synthetic and real."""
    folder.mkdir(parents=True, exist_ok=True)
    rt = synth.make_rt_set(n_ct=3, n_rois=2, n_beams=1, rows=32, cols=32, patient_index=3)
    objects = [*rt.ct, rt.rtstruct, synth.make_sr(patient_index=3, referenced=rt.ct)]
    paths = []
    for n, ds in enumerate(objects):
        path = folder / f"synth{n:02d}.dcm"
        synth.write(ds, path)
        paths.append(path)
    for sample in (TEST_FILES / "MR_small.dcm", TEST_FILES / "reportsi.dcm",
                   SAMPLES / "rt-utils" / "mock_data" / "rt.dcm"):
        path = folder / f"sample-{sample.name}"
        path.write_bytes(sample.read_bytes())
        paths.append(path)
    return paths


def ct_data_set(rows: int = 128, series: int = 9) -> tuple[Dataset, bytes]:
    ds = synth.make_ct_series(1, rows=rows, cols=rows, series_number=series)[0]
    ds.file_meta = synth._file_meta(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian)
    return ds, dul.encoded(ds)


STORE_CONTEXTS = [(1, dul.VERIFICATION, [dul.IMPLICIT_LE]),
                  (3, str(CTImageStorage), [dul.EXPLICIT_LE])]


# ---- DCMTK storescu and echoscu --------------------------------------------------------


def test_storescu_one_presentation_context(tmp_path: Path, pipeline: Pipeline) -> None:
    """Five CT objects of one SOP class and transfer syntax (one presentation context):
    all answered Success, all in the bucket with the data set as sent."""
    _, spool = start(pipeline, tmp_path)
    paths = ct_file(tmp_path / "ct", count=5)
    sent = pipeline.storescu(tmp_path / "ct")
    assert sent.returncode == 0, sent.stderr[-800:]
    drained(pipeline, spool, 5)
    assert_complete(stored_objects(pipeline), {sop_uid(p): file_data_set(p) for p in paths})


def test_storescu_many_presentation_contexts(tmp_path: Path, pipeline: Pipeline) -> None:
    """A folder of mixed SOP classes (CT, MR, RT Structure Set, SR; storescu proposes a
    context per SOP class and transfer syntax found): every object arrives."""
    _, spool = start(pipeline, tmp_path)
    paths = mixed_folder(tmp_path / "mixed")
    sent = pipeline.storescu(tmp_path / "mixed")
    assert sent.returncode == 0, sent.stderr[-800:]
    keys = drained(pipeline, spool, len(paths))
    assert len(keys) == len(paths)
    assert sorted(stored_objects(pipeline)) == sorted(uid_digest(sop_uid(p)) for p in paths)


def test_compressed_transfer_syntaxes_are_kept_as_received(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """JPEG baseline, JPEG 2000 and RLE objects sent by storescu in their own transfer
    syntax (it is told to propose it first) are kept in it, with their compressed pixel
    data and every element as in the file: the SCP never decompresses or transcodes
    (PS3.4 B.4.1). storescu re-encodes some data sets (sequence lengths, trailing
    padding), so the bytes are compared in the next test, with a sender that sends the
    file's data set as it is."""
    _, spool = start(pipeline, tmp_path)
    paths = {}
    for name, (_, option) in COMPRESSED.items():
        folder = tmp_path / f"compressed{option}"
        folder.mkdir(exist_ok=True)
        paths[name] = folder / Path(name).name
        paths[name].write_bytes((TEST_FILES / name).read_bytes())
    for option in sorted({option for _, option in COMPRESSED.values()}):
        sent = pipeline.storescu(tmp_path / f"compressed{option}", option)
        assert sent.returncode == 0, sent.stderr[-800:]
    drained(pipeline, spool, len(COMPRESSED))
    objects = stored_objects(pipeline)
    for name, (syntax, _) in COMPRESSED.items():
        stored = dcmread(io.BytesIO(objects[uid_digest(sop_uid(paths[name]))]))
        assert stored.file_meta.TransferSyntaxUID == syntax, name
        original = dcmread(paths[name])
        assert stored.PixelData == original.PixelData, name
        del original.file_meta, stored.file_meta
        assert stored == original, name


@pytest.mark.usefixtures("chunked_send")
def test_compressed_data_sets_are_stored_byte_for_byte(tmp_path: Path, pipeline: Pipeline
                                                       ) -> None:
    """The same compressed samples sent by pynetdicom straight from the files (the data
    set bytes of each file as they are, in the file's transfer syntax): the data set in
    the bucket is byte-identical to the one sent."""
    _, spool = start(pipeline, tmp_path)
    ae = AE(ae_title="TESTSCU")
    paths = [TEST_FILES / name for name in COMPRESSED]
    for path in paths:
        meta = dcmread(path, stop_before_pixels=True)
        ae.add_requested_context(meta.SOPClassUID, meta.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", pipeline.scp_port, ae_title=SCP_AET)
    assert assoc.is_established
    try:
        for path in paths:
            assert int(assoc.send_c_store(path).Status) == 0x0000, path.name
    finally:
        assoc.release()
    drained(pipeline, spool, len(paths))
    assert_complete(stored_objects(pipeline), {sop_uid(p): file_data_set(p) for p in paths})


@pytest.mark.parametrize("max_pdu", [4096, 131072])
def test_storescu_maximum_pdu_sizes(tmp_path: Path, pipeline: Pipeline, max_pdu: int) -> None:
    """Small and large PDUs (both sides announce ``max_pdu``): a 131 KB object in 32 or
    in one or two P-DATA-TF PDUs arrives whole."""
    _, spool = start(pipeline, tmp_path, SCP_MAX_PDU_SIZE=str(max_pdu))
    paths = ct_file(tmp_path / "ct", rows=256, count=2)
    sent = pipeline.storescu(tmp_path / "ct", "--max-pdu", str(max_pdu))
    assert sent.returncode == 0, sent.stderr[-800:]
    drained(pipeline, spool, 2)
    assert_complete(stored_objects(pipeline), {sop_uid(p): file_data_set(p) for p in paths})


@pytest.mark.parametrize("proposal", ["-xe", "-xb", "-xi", "-xs", "-xv", "-xw"])
def test_storescu_proposals_of_transfer_syntaxes(
    tmp_path: Path, pipeline: Pipeline, proposal: str
) -> None:
    """storescu's ways of proposing transfer syntaxes (explicit little endian first, big
    endian first, implicit only, JPEG lossless, JPEG 2000 lossless/lossy first): the SCP
    accepts one it supports and the objects arrive (storescu converts uncompressed files
    as the accepted syntax needs)."""
    _, spool = start(pipeline, tmp_path)
    ct_file(tmp_path / "ct", count=2)
    sent = pipeline.storescu(tmp_path / "ct", proposal)
    assert sent.returncode == 0, sent.stderr[-800:]
    drained(pipeline, spool, 2)


def test_four_storescu_associations_in_parallel(tmp_path: Path, pipeline: Pipeline) -> None:
    """Four storescu processes at once, ten objects each: all 40 arrive, none twice."""
    _, spool = start(pipeline, tmp_path)
    uids = set()
    for n in range(4):
        uids |= {sop_uid(p) for p in ct_file(tmp_path / f"part{n}", count=10, series=20 + n)}
    results: list[subprocess.CompletedProcess[str]] = []
    senders = [threading.Thread(target=lambda n=n: results.append(
        pipeline.storescu(tmp_path / f"part{n}"))) for n in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(300)
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr[-400:] for r in results]
    drained(pipeline, spool, 40)
    assert sorted(stored_objects(pipeline)) == sorted(uid_digest(u) for u in uids)


def test_echoscu_is_answered_success(tmp_path: Path, pipeline: Pipeline) -> None:
    """C-ECHO (Verification, PS3.4 A) from DCMTK: Success."""
    start(pipeline, tmp_path)
    answered = echoscu(pipeline)
    assert answered.returncode == 0, answered.stdout + answered.stderr


# ---- pynetdicom SCU --------------------------------------------------------------------


def test_pynetdicom_store_and_echo_over_several_contexts(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """pynetdicom proposes several presentation contexts (CT, MR, RT Structure Set, SRs,
    Verification), stores one object of each on one association and echoes: all Success,
    all arrive."""
    _, spool = start(pipeline, tmp_path)
    ae = AE(ae_title="TESTSCU")
    for sop_class in (CTImageStorage, MRImageStorage, RTStructureSetStorage,
                      ComprehensiveSRStorage, BasicTextSRStorage):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_requested_context(Verification)
    files = mixed_folder(tmp_path / "mixed")
    assoc = ae.associate("127.0.0.1", pipeline.scp_port, ae_title=SCP_AET)
    assert assoc.is_established
    try:
        assert len(assoc.accepted_contexts) == 6
        assert assoc.send_c_echo().Status == 0x0000
        for path in files:
            assert int(assoc.send_c_store(dcmread(path)).Status) == 0x0000, path.name
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    drained(pipeline, spool, len(files))


def test_asynchronous_operations_window_is_answered_with_one_operation(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """A requestor proposing an asynchronous operations window of 8/8 (PS3.7 D.3.3.3) is
    answered with 1/1, or with no window item (which means 1/1, the default): the SCP
    performs one operation at a time. Checked on the raw A-ASSOCIATE-AC and with
    pynetdicom, which then stores with one outstanding operation."""
    _, spool = start(pipeline, tmp_path)
    with dul.Peer(pipeline.scp_port) as peer:
        accepted = peer.associate(STORE_CONTEXTS, window=(8, 8))
        assert accepted.window in (None, (1, 1)), accepted.window
        assert accepted.results[1][0] == 0 and accepted.results[3][0] == 0
        peer.release()
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 8
    window.maximum_number_operations_performed = 8
    assoc = ae.associate("127.0.0.1", pipeline.scp_port, ae_title=SCP_AET,
                         ext_neg=[window])
    assert assoc.is_established
    try:
        assert assoc.acceptor.asynchronous_operations in ((1, 1),), \
            assoc.acceptor.asynchronous_operations
        for ds in synth.make_ct_series(3, series_number=31):
            assert int(assoc.send_c_store(ds).Status) == 0x0000
    finally:
        assoc.release()
    drained(pipeline, spool, 3)


# ---- Orthanc: C-STORE push and C-MOVE sub-operations ---------------------------------


def orthanc_with_study(orthanc_factory: Callable[..., Orthanc], pipeline: Pipeline,
                       tmp_path: Path, count: int) -> tuple[Orthanc, str, set[str]]:
    orthanc = orthanc_factory("ORTHANC", modalities={SCP_AET: ("127.0.0.1", pipeline.scp_port)})
    series = synth.make_ct_series(count, patient_index=5, series_number=41)
    folder = tmp_path / "study"
    folder.mkdir()
    paths = []
    for n, ds in enumerate(series):
        synth.write(ds, folder / f"{n}.dcm")
        paths.append(folder / f"{n}.dcm")
    orthanc.upload(paths)
    return orthanc, str(series[0].StudyInstanceUID), {str(ds.SOPInstanceUID) for ds in series}


def test_orthanc_pushes_a_study(
    tmp_path: Path, pipeline: Pipeline, orthanc_factory: Callable[..., Orthanc]
) -> None:
    """Orthanc's /modalities/<name>/store sends a study to the SCP: every instance
    arrives."""
    _, spool = start(pipeline, tmp_path)
    orthanc, _, uids = orthanc_with_study(orthanc_factory, pipeline, tmp_path, 8)
    studies = orthanc.rest("GET", "/studies")
    answer: Any = orthanc.rest("POST", f"/modalities/{SCP_AET}/store",
                               {"Resources": studies, "Synchronous": True})
    assert answer is None or answer.get("FailedInstancesCount", 0) == 0, answer
    drained(pipeline, spool, 8)
    assert sorted(stored_objects(pipeline)) == sorted(uid_digest(u) for u in uids)


def test_orthanc_moves_a_study_to_the_scp(
    tmp_path: Path, pipeline: Pipeline, orthanc_factory: Callable[..., Orthanc]
) -> None:
    """A C-MOVE SCU asks Orthanc to move a study to the SCP's AE title: Orthanc's
    sub-operations (C-STORE to the SCP) all succeed and every instance arrives."""
    _, spool = start(pipeline, tmp_path)
    orthanc, study, uids = orthanc_with_study(orthanc_factory, pipeline, tmp_path, 6)
    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title="ORTHANC")
    assert assoc.is_established
    statuses = []
    try:
        for status, _ in assoc.send_c_move(query, SCP_AET,
                                           StudyRootQueryRetrieveInformationModelMove):
            statuses.append(status)
    finally:
        assoc.release()
    final = statuses[-1]
    assert final.Status == 0x0000, final
    assert int(final.get("NumberOfFailedSuboperations", 0)) == 0
    drained(pipeline, spool, 6)
    assert sorted(stored_objects(pipeline)) == sorted(uid_digest(u) for u in uids)


# ---- failures ------------------------------------------------------------------------


def half_an_object(peer: dul.Peer, max_length: int) -> None:
    """Associate, send a C-STORE-RQ and about half of its data set's fragments."""
    accepted = peer.associate(STORE_CONTEXTS, max_length=16384)
    assert accepted.results[3][0] == 0
    ds, data_set = ct_data_set()
    pieces = dul.fragments(3, data_set, min(max_length, accepted.max_length), command=False)
    assert len(pieces) >= 4
    peer.send(dul.p_data(3, dul.c_store_rq(str(ds.SOPClassUID), str(ds.SOPInstanceUID)),
                         command=True, last=True))
    for piece in pieces[:len(pieces) // 2]:
        peer.send(piece)
    time.sleep(0.3)  # the SCP has the first fragments in its journal


def test_an_a_abort_in_the_middle_of_an_object_keeps_nothing(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """An A-ABORT (PS3.8 9.3.8) after half the data set: the association ends, the SCP
    sends nothing more, and no part of the object is kept."""
    scp, spool = start(pipeline, tmp_path)
    with dul.Peer(pipeline.scp_port) as peer:
        half_an_object(peer, 8192)
        peer.send(dul.abort())
        seen = peer.ending(within=5)
        assert [kind for kind, _ in seen] == [], seen  # an A-ABORT is not answered
    drained(pipeline, spool, 0, timeout=10)
    assert_still_serving(scp, pipeline)
    drained(pipeline, spool, 0, timeout=10)


def test_a_peer_vanishing_in_the_middle_of_an_object_leaves_nothing(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """The connection is reset after half the data set, without an A-ABORT (a sender
    that crashed or lost its network): nothing of the object is kept."""
    scp, spool = start(pipeline, tmp_path)
    with dul.Peer(pipeline.scp_port) as peer:
        half_an_object(peer, 8192)
        peer.vanish()
    time.sleep(1)
    drained(pipeline, spool, 0, timeout=10)
    assert_still_serving(scp, pipeline)


def test_a_peer_that_never_releases_is_ended_after_the_network_timeout(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """After its last C-STORE (answered Success) the peer stays silent: the SCP ends the
    association (A-ABORT, or a closed connection) after SCP_NETWORK_TIMEOUT, not much
    later; the object answered Success is kept, whole."""
    scp, spool = start(pipeline, tmp_path, SCP_NETWORK_TIMEOUT="1")
    ds, data_set = ct_data_set(rows=64)
    with dul.Peer(pipeline.scp_port) as peer:
        accepted = peer.associate(STORE_CONTEXTS)
        answer = peer.store(3, str(ds.SOPClassUID), str(ds.SOPInstanceUID), data_set,
                            accepted.max_length)
        assert (answer.command_field, answer.status) == (dul.C_STORE_RSP, 0x0000)
        started = time.monotonic()
        seen = peer.ending(within=6)
        waited = time.monotonic() - started
    assert all(kind == dul.ABORT for kind, _ in seen), seen
    assert 0.5 < waited < 4, f"ended after {waited:.1f} s"
    drained(pipeline, spool, 1)
    assert_complete(stored_objects(pipeline), {str(ds.SOPInstanceUID): data_set})
    assert_still_serving(scp, pipeline)


def test_a_connection_without_a_request_is_closed_after_the_artim_timeout(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """A peer that connects and never sends an A-ASSOCIATE-RQ: the ARTIM timer
    (SCP_ACSE_TIMEOUT, PS3.8 9.1.5) expires and the SCP closes the transport connection
    (PS3.8 state Sta2, event 18: AA-2, no PDU sent)."""
    scp, spool = start(pipeline, tmp_path, SCP_ACSE_TIMEOUT="1")
    with dul.Peer(pipeline.scp_port) as peer:
        started = time.monotonic()
        seen = peer.ending(within=6)
        waited = time.monotonic() - started
    assert seen == [], seen
    assert 0.5 < waited < 4, f"closed after {waited:.1f} s"
    assert_still_serving(scp, pipeline)
    drained(pipeline, spool, 0, timeout=5)


def test_presentation_contexts_refused_with_their_reasons(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """An unknown abstract syntax gets result 3 (abstract-syntax-not-supported) and a
    known one proposed with unsupported transfer syntaxes only result 4
    (transfer-syntaxes-not-supported), PS3.8 9.3.3.2; the Verification context proposed
    beside them is accepted and works. A C-STORE on a refused context is never kept."""
    scp, spool = start(pipeline, tmp_path)
    with dul.Peer(pipeline.scp_port) as peer:
        accepted = peer.associate([
            (1, dul.VERIFICATION, [dul.IMPLICIT_LE]),
            (3, "1.2.826.0.1.3680043.9.3811.777.1", [dul.EXPLICIT_LE, dul.IMPLICIT_LE]),
            (5, str(CTImageStorage), ["1.2.826.0.1.3680043.9.3811.777.2"]),
        ])
        assert accepted.results[1][0] == 0
        assert accepted.results[3][0] == 3, accepted.results
        assert accepted.results[5][0] == 4, accepted.results
        assert peer.echo().status == 0x0000
        peer.release()
    assert_still_serving(scp, pipeline)
    drained(pipeline, spool, 0, timeout=5)


def test_a_p_data_pdu_longer_than_announced_is_refused_and_nothing_kept(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """A P-DATA-TF PDU longer than the Maximum Length the SCP announced (PS3.8 D.1): the
    SCP aborts the association (A-ABORT) or closes the connection; nothing is kept."""
    scp, spool = start(pipeline, tmp_path, SCP_MAX_PDU_SIZE="8192")
    ds, data_set = ct_data_set()
    with dul.Peer(pipeline.scp_port) as peer:
        accepted = peer.associate(STORE_CONTEXTS)
        assert accepted.max_length == 8192
        peer.send(dul.p_data(3, dul.c_store_rq(str(ds.SOPClassUID), str(ds.SOPInstanceUID)),
                             command=True, last=True))
        try:
            for piece in dul.fragments(3, data_set, 65536, command=False):
                peer.send(piece)
        except OSError:
            pass  # closed while we were still sending: allowed
        try:
            seen = peer.ending(within=5)
        except dul.Closed:
            seen = []
    assert all(kind == dul.ABORT for kind, _ in seen), seen
    assert_still_serving(scp, pipeline)
    drained(pipeline, spool, 0, timeout=10)


def test_an_unknown_pdu_type_is_aborted_as_unrecognized(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """A PDU of type 0x0A during an association: PS3.8 9.3.8 and the state table (event
    19, AA-1) want an A-ABORT from the service provider (source 2) with reason 1
    (unrecognized-PDU), then the connection closed. This test requires the A-ABORT; a
    connection closed without it fails."""
    scp, spool = start(pipeline, tmp_path)
    with dul.Peer(pipeline.scp_port) as peer:
        peer.associate(STORE_CONTEXTS)
        peer.send(dul.pdu(0x0A, b"\x00" * 8))
        seen = peer.ending(within=5)
    assert seen, "closed without an A-ABORT"
    assert len(seen) == 1 and seen[0][0] == dul.ABORT, seen
    assert (seen[0][1][2], seen[0][1][3]) == (2, 1), seen
    assert_still_serving(scp, pipeline)
    drained(pipeline, spool, 0, timeout=5)


def test_an_unsupported_protocol_version_is_rejected(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """An A-ASSOCIATE-RQ whose protocol version does not have bit 0 set (version 2 only):
    A-ASSOCIATE-RJ, rejected-permanent (1), by the ACSE service provider (2),
    protocol-version-not-supported (2), PS3.8 9.3.4. The requestor is then to close
    (Sta13); one that does not is closed when the ARTIM timer (SCP_ACSE_TIMEOUT) ends."""
    scp, spool = start(pipeline, tmp_path, SCP_ACSE_TIMEOUT="1")
    with dul.Peer(pipeline.scp_port) as peer:
        peer.send(dul.associate_rq(STORE_CONTEXTS, version=2))
        kind, body = peer.receive()
        assert kind == dul.ASSOCIATE_RJ, (kind, body[:8])
        assert tuple(body[1:4]) == (1, 2, 2), body[:4]
        peer.ending(within=5)
    assert_still_serving(scp, pipeline)
    drained(pipeline, spool, 0, timeout=5)


def test_a_release_request_is_answered_and_the_connection_closed(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """A-RELEASE-RQ gets A-RELEASE-RP (PS3.8 7.2, 9.3.7), after which the SCP expects the
    requestor to close; it sends nothing more and the connection ends."""
    scp, spool = start(pipeline, tmp_path)
    with dul.Peer(pipeline.scp_port) as peer:
        peer.associate(STORE_CONTEXTS)
        peer.send(dul.release_rq())
        kind, body = peer.receive()
        assert (kind, body) == (dul.RELEASE_RP, bytes(4))
        peer.close()
    assert_still_serving(scp, pipeline)
    drained(pipeline, spool, 0, timeout=5)


def test_struct_encoding_of_the_helpers_is_what_ps3_8_says() -> None:
    """The hand-made PDUs the robustness tests rely on: header layout (type, reserved,
    32-bit big-endian length) and a P-DATA-TF value item (length, context, header)."""
    rq = dul.release_rq()
    assert rq == b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
    data = dul.p_data(3, b"abcd", command=True, last=True)
    assert struct.unpack(">BBLLBB", data[:12]) == (4, 0, 10, 6, 3, 3)
