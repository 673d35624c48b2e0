"""The Storage SCP as a process, against real peers (DCMTK's echoscu and storescu, pynetdicom
SCUs, raw sockets) and real backends: what it admits, its limits and timeouts, the status
of refused objects, and what a timed-out receipt leaves behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import MaximumLengthNotification
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from shared.messaging import RabbitBroker
from shared.messaging.topology import ANONYMIZE, Topology
from tests import synth
from tests.handmade import nested_file
from tests.pipeline_support import Pipeline

pytestmark = pytest.mark.integration

ECHOSCU = Path("/usr/bin/echoscu")


# ---- helpers ---------------------------------------------------------------------------


class SlowProxy:
    """A TCP proxy in front of a server (S3, RabbitMQ) whose answers can be held back: a
    request reaches the server at once (the object is stored, the message queued), its
    response arrives ``delay`` seconds later, as from an overloaded server."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.delay = 0.0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            held: queue.Queue[tuple[float, bytes]] = queue.Queue()
            threading.Thread(target=self._pump, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, held), daemon=True).start()
            threading.Thread(target=self._release, args=(held, client), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket,
              held: queue.Queue[tuple[float, bytes]] | None) -> None:
        """Forward requests at once; put answers on ``held`` with the time they are due."""
        try:
            while chunk := source.recv(65536):
                if held is None:
                    target.sendall(chunk)
                else:
                    held.put((time.monotonic() + self.delay, chunk))
        except OSError:
            pass
        finally:
            if held is not None:
                held.put((0.0, b""))
            else:
                self._close(source, target)

    def _release(self, held: queue.Queue[tuple[float, bytes]], target: socket.socket) -> None:
        """Send each answer when it is due (in order: latency, not lost bandwidth)."""
        try:
            while True:
                due, chunk = held.get()
                if not chunk:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            self._close(target)

    @staticmethod
    def _close(*ends: socket.socket) -> None:
        for end in ends:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self._closed = True
        self.listener.close()


@pytest.fixture
def slow_s3(pipeline: Pipeline) -> Iterator[SlowProxy]:
    proxy = SlowProxy(pipeline.s3.endpoint)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def slow_amqp(pipeline: Pipeline) -> Iterator[SlowProxy]:
    host_port = pipeline.amqp_url.rsplit("@", 1)[-1].split("/", 1)[0]
    proxy = SlowProxy(host_port)
    try:
        yield proxy
    finally:
        proxy.close()


def queued(pipeline: Pipeline) -> int:
    """Messages waiting on the pipeline's anonymize queue."""

    async def depth() -> int:
        broker = RabbitBroker(pipeline.amqp_url, Topology(pipeline.prefix, 3))
        await broker.connect()
        try:
            return await broker.depth(ANONYMIZE)
        finally:
            await broker.close()

    return asyncio.run(depth())


def scu(max_pdu: int = 16382) -> AE:
    ae = AE(ae_title="TESTSCU")
    ae.maximum_pdu_size = max_pdu
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    return ae


def associate(pipeline: Pipeline, ae: AE | None = None, **kwargs: object) -> Association:
    assoc = (ae or scu()).associate("127.0.0.1", pipeline.scp_port, ae_title="ANONSCP",
                                    **kwargs)  # type: ignore[arg-type]
    sock = assoc.dul.socket.socket if assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return assoc


def store(pipeline: Pipeline, dataset: Dataset | Path) -> int | None:
    """C-STORE one object over a new association; the status, or None without answer."""
    assoc = associate(pipeline)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(dataset)
    finally:
        if assoc.is_established:
            assoc.release()
    return int(status.Status) if "Status" in status else None


def ct_object(rows: int = 64) -> Dataset:
    return synth.make_ct_series(1, rows=rows, cols=rows, series_number=int(time.time()) % 1000)[0]


def closed_without_a_pdu(pipeline: Pipeline, send: bytes = b"", wait: float = 5.0) -> bool:
    """Connect, optionally send ``send``; True if the SCP closes the connection without
    sending a single byte."""
    with socket.create_connection(("127.0.0.1", pipeline.scp_port), timeout=wait) as conn:
        if send:
            try:
                conn.sendall(send)
            except OSError:
                return True
        try:
            return conn.recv(1) == b""
        except ConnectionResetError:
            return True


def association_rq(called: str = "ANONSCP", calling: str = "TESTSCU") -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing Verification, encoded by hand (PS3.8 9.3.2)."""

    def item(kind: int, value: bytes) -> bytes:
        return struct.pack(">BBH", kind, 0, len(value)) + value

    context = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, b"1.2.840.10008.1.1")
                   + item(0x40, b"1.2.840.10008.1.2"))
    user = item(0x50, item(0x51, struct.pack(">L", 16384))
                + item(0x52, b"1.2.826.0.1.3680043.9.3811.1"))
    body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode()
            + bytes(32) + item(0x10, b"1.2.840.10008.3.1.1.1") + context + user)
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def echoscu(pipeline: Pipeline) -> subprocess.CompletedProcess[str]:
    if not ECHOSCU.exists():
        raise AssertionError("DCMTK's echoscu is required: apt-get install dcmtk")
    return subprocess.run(
        [str(ECHOSCU), "-aec", "ANONSCP", "-aet", "TESTSCU", "-to", "5",
         "127.0.0.1", str(pipeline.scp_port)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "TCP_NODELAY": "1"},
    )


def nested_object(path: Path, depth: int) -> Path:
    path.write_bytes(nested_file(depth))
    return path


@pytest.fixture
def chunked_send() -> Iterator[None]:
    """pynetdicom sends files as they are, without reading them with pydicom."""
    before = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = before


# ---- storage timeouts -----------------------------------------------------------------


def test_a_timed_out_receipt_keeps_and_announces_nothing_and_a_retry_gives_one_object(
    pipeline: Pipeline, slow_s3: SlowProxy
) -> None:
    pipeline.start("scp_ingest", S3_ENDPOINT=slow_s3.endpoint, SCP_STORE_TIMEOUT="1")
    dataset = ct_object()
    slow_s3.delay = 4.0  # the object is stored at once, the store answers 4 s later
    started = time.monotonic()
    status = store(pipeline, dataset)
    answered = time.monotonic() - started
    assert status == 0xA700
    assert answered < 3.5, f"answered after {answered:.1f} s"
    # The upload itself went through (the slow part is real) ...
    deadline = time.monotonic() + 3
    seen = False
    while time.monotonic() < deadline and not seen:
        seen = bool(pipeline.keys(pipeline.buckets.incoming))
        time.sleep(0.1)
    assert seen, "the slow store never received the object"
    # ... and once its late answer came, the abandoned receipt removed it and announced nothing.
    time.sleep(slow_s3.delay * 2 + 2)
    assert pipeline.keys(pipeline.buckets.incoming) == []
    assert queued(pipeline) == 0
    assert pipeline.counts()["received"] == 0
    slow_s3.delay = 0.0
    assert store(pipeline, dataset) == 0x0000  # the sender retries
    time.sleep(1)
    assert len(pipeline.keys(pipeline.buckets.incoming)) == 1
    assert queued(pipeline) == 1


def test_a_receipt_already_announcing_when_the_wait_ends_is_answered_by_its_outcome(
    pipeline: Pipeline, slow_amqp: SlowProxy
) -> None:
    """Past its point of no return (the message is being published) a receipt is not
    abandoned: the SCP waits for the broker's confirmation and answers what happened, so
    the sender never retries an object that was in fact announced."""
    pipeline.start("scp_ingest", SCP_STORE_TIMEOUT="1",
                   AMQP_URL=f"amqp://guest:guest@{slow_amqp.endpoint}/")
    dataset = ct_object()
    slow_amqp.delay = 2.5  # the confirmation of the publish comes 2.5 s late
    started = time.monotonic()
    status = store(pipeline, dataset)
    slow_amqp.delay = 0.0
    assert status == 0x0000, hex(status or 0)
    assert time.monotonic() - started > 2
    time.sleep(1)
    assert len(pipeline.keys(pipeline.buckets.incoming)) == 1
    assert queued(pipeline) == 1


def test_a_stop_lets_the_c_store_in_flight_finish_and_its_answer_tells_the_truth(
    pipeline: Pipeline, slow_s3: SlowProxy
) -> None:
    scp = pipeline.start("scp_ingest", S3_ENDPOINT=slow_s3.endpoint, SCP_STORE_TIMEOUT="20")
    slow_s3.delay = 3.0
    statuses: list[int | None] = []
    sender = threading.Thread(target=lambda: statuses.append(store(pipeline, ct_object())))
    sender.start()
    time.sleep(1.5)  # the object is being stored
    scp.stop()  # SIGTERM
    sender.join(30)
    slow_s3.delay = 0.0
    assert scp.process.returncode == 0, scp.log.read_text()[-2000:]
    assert statuses == [0x0000], statuses
    assert len(pipeline.keys(pipeline.buckets.incoming)) == 1
    assert queued(pipeline) == 1


# ---- refused objects: Cannot Understand, never Out of Resources ------------------------


def test_a_3000_level_nested_object_is_cannot_understand_and_the_scp_keeps_answering(
    tmp_path: Path, pipeline: Pipeline, chunked_send: None
) -> None:
    scp = pipeline.start("scp_ingest")
    deep = nested_object(tmp_path / "deep.dcm", 3000)
    assert store(pipeline, deep) == 0xC000
    counts = pipeline.wait_for(lambda c: c["quarantined"] >= 1, timeout=30)
    assert counts["received"] == 0
    ((code, reason),) = pipeline.quarantine_reasons().values()
    assert "nest" in reason, (code, reason)
    assert len(pipeline.keys(pipeline.buckets.quarantine)) == 1
    assert pipeline.keys(pipeline.buckets.incoming) == []
    # The same again gets the same answer (a sender must not retry it), and the SCP
    # still takes good objects.
    assert store(pipeline, deep) == 0xC000
    assert store(pipeline, ct_object()) == 0x0000
    assert scp.process.poll() is None
    assert "RecursionError" not in scp.log.read_text()


def test_an_object_larger_than_max_object_bytes_is_refused_unread(
    pipeline: Pipeline,
) -> None:
    pipeline.start("scp_ingest", MAX_OBJECT_BYTES="100000")
    assert store(pipeline, ct_object(rows=256)) == 0xC000  # 131 KB of pixel data
    counts = pipeline.wait_for(lambda c: c["quarantined"] >= 1, timeout=30)
    assert counts["received"] == 0
    ((code, reason),) = pipeline.quarantine_reasons().values()
    assert code == "limit-exceeded"
    assert "MAX_OBJECT_BYTES" in reason and "100000" in reason
    assert pipeline.keys(pipeline.buckets.incoming) == []
    assert store(pipeline, ct_object(rows=64)) == 0x0000  # 8 KB: taken


def test_a_data_set_far_over_max_object_bytes_is_cut_off_and_leaves_nothing_in_the_spool(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "tmp_left_by_a_crash.dcm").write_bytes(b"PHI of a half-received object")
    (spool / "notes.txt").write_text("not the SCP's")
    scp = pipeline.start("scp_ingest", MAX_OBJECT_BYTES="100000", SCP_SPOOL_DIR=str(spool))
    assert sorted(p.name for p in spool.iterdir()) == ["notes.txt"]  # cleared at start
    assoc = associate(pipeline)
    assert assoc.is_established
    status = assoc.send_c_store(ct_object(rows=1024))  # 2 MiB: far beyond the limit
    assert "Status" not in status  # cut off before the data set was all received
    deadline = time.monotonic() + 5
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not assoc.is_established
    time.sleep(0.5)
    assert sorted(p.name for p in spool.iterdir()) == ["notes.txt"]
    assert pipeline.keys(pipeline.buckets.incoming) == []
    assert "data set larger than the largest object accepted" in scp.log.read_text()
    assert store(pipeline, ct_object(rows=64)) == 0x0000


# ---- admission: hosts, associations, PDU size, timeouts --------------------------------


def test_a_host_not_allowed_never_gets_an_association(pipeline: Pipeline) -> None:
    pipeline.start("scp_ingest", SCP_ALLOWED_HOSTS="192.0.2.7, 198.51.100.0/24")
    # Closed before any PDU is read or answered: not even an A-ABORT or A-ASSOCIATE-RJ.
    assert closed_without_a_pdu(pipeline, association_rq())
    received: list[object] = []
    assoc = associate(pipeline, evt_handlers=[
        (evt.EVT_PDU_RECV, lambda event: received.append(event.pdu))])
    assert not assoc.is_established and not assoc.is_rejected
    assert received == []
    refused = echoscu(pipeline)
    assert refused.returncode != 0, refused.stdout + refused.stderr


def test_an_allowed_network_is_admitted(pipeline: Pipeline) -> None:
    pipeline.start("scp_ingest", SCP_ALLOWED_HOSTS="192.0.2.7,127.0.0.0/8")
    accepted = echoscu(pipeline)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_more_than_max_associations_are_refused(pipeline: Pipeline) -> None:
    pipeline.start("scp_ingest", SCP_MAX_ASSOCIATIONS="2", SCP_ACSE_TIMEOUT="10")
    held = [associate(pipeline) for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        third = associate(pipeline)
        assert third.is_rejected and not third.is_established
        rejection = third.acceptor.primitive
        assert rejection is not None
        # transient, service-provider (presentation), local limit exceeded
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (2, 3, 2)
        assert echoscu(pipeline).returncode != 0
        # A connection that sends nothing holds a place (until the ACSE timeout); one
        # beyond that is closed at once.
        time.sleep(0.5)  # the refused ones are gone
        with socket.create_connection(("127.0.0.1", pipeline.scp_port), timeout=1) as idle:
            with pytest.raises(TimeoutError):
                idle.recv(1)
            assert closed_without_a_pdu(pipeline, wait=3)
    finally:
        for assoc in held:
            assoc.release()
    time.sleep(0.5)
    again = associate(pipeline)
    assert again.is_established
    assert again.send_c_echo().Status == 0
    again.release()


def test_the_maximum_pdu_size_is_announced_and_enforced(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    pipeline.start("scp_ingest", SCP_MAX_PDU_SIZE="8192")
    assoc = associate(pipeline)
    assert assoc.is_established
    assert assoc.acceptor.maximum_length == 8192
    assoc.release()
    # DCMTK's storescu splits a 131 KB object into PDUs of at most 8192 bytes: taken.
    folder = tmp_path / "big"
    folder.mkdir()
    synth.write(ct_object(rows=256), folder / "big.dcm")
    sent = pipeline.storescu(folder)
    assert sent.returncode == 0, sent.stderr[-800:]
    assert len(pipeline.keys(pipeline.buckets.incoming)) == 1
    # A peer that ignores the limit is cut off before the PDU is read; nothing is kept.
    rude = associate(pipeline)
    assert rude.is_established
    for item in rude.acceptor.user_information:  # as if the SCP had announced 64 KiB
        if isinstance(item, MaximumLengthNotification):
            item.maximum_length_received = 65536
    assert rude.acceptor.maximum_length == 65536
    status = rude.send_c_store(ct_object(rows=256))
    assert "Status" not in status
    deadline = time.monotonic() + 5
    while rude.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not rude.is_established
    time.sleep(0.5)
    assert len(pipeline.keys(pipeline.buckets.incoming)) == 1


def test_acse_and_network_timeouts_close_idle_peers(pipeline: Pipeline) -> None:
    pipeline.start("scp_ingest", SCP_ACSE_TIMEOUT="1", SCP_NETWORK_TIMEOUT="2")
    started = time.monotonic()
    assert closed_without_a_pdu(pipeline, wait=10)  # no A-ASSOCIATE-RQ: ARTIM expires
    assert time.monotonic() - started < 4
    aborted = threading.Event()
    assoc = associate(pipeline, evt_handlers=[(evt.EVT_ABORTED, lambda e: aborted.set())])
    assert assoc.is_established
    assert aborted.wait(8), "an idle association was not aborted"
    assert not assoc.is_established


def test_a_store_slower_than_the_network_timeout_keeps_the_association(
    pipeline: Pipeline, slow_s3: SlowProxy
) -> None:
    pipeline.start("scp_ingest", S3_ENDPOINT=slow_s3.endpoint, SCP_NETWORK_TIMEOUT="1",
                   SCP_STORE_TIMEOUT="8")
    assoc = associate(pipeline)
    assert assoc.is_established
    slow_s3.delay = 1.5
    assert int(assoc.send_c_store(ct_object()).Status) == 0x0000
    slow_s3.delay = 0.0
    # The sender was waiting for the answer, not idle: the association is still usable.
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()
