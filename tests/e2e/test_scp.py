"""The Storage SCP as a process, against real peers (DCMTK's echoscu and storescu, pynetdicom
SCUs, raw sockets) and real backends: what it admits, its limits and timeouts, the status
of refused objects, and the journal: Success only once durable, nothing lost to a slow
backend, a stop, a kill -9 or a full volume."""

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
from collections.abc import Callable, Iterator
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
        with contextlib.suppress(OSError):  # already closed by a refusing SCP
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


# ---- durability: the journal answers, the relay stores and announces -----------------


def journal_entries(pipeline: Pipeline, folder: str = "ready") -> list[str]:
    """The files in one folder of the SCP's journal (DATA_DIR/scp-journal by default)."""
    path = pipeline.tmp / "data" / "scp-journal" / folder
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_c_store_is_answered_once_durable_even_while_storage_is_slow(
    pipeline: Pipeline, slow_s3: SlowProxy
) -> None:
    """Success waits for the journal's flush, not for the object store: a slow store
    delays the relay, never the sender; the object arrives once, and the journal empties."""
    pipeline.start("scp_ingest", S3_ENDPOINT=slow_s3.endpoint, SCP_STORE_TIMEOUT="1")
    slow_s3.delay = 4.0
    started = time.monotonic()
    assert store(pipeline, ct_object()) == 0x0000
    answered = time.monotonic() - started
    assert answered < 2.0, f"answered after {answered:.1f} s"
    assert len(journal_entries(pipeline)) == 1  # durable there, not yet in the store
    assert wait_until(lambda: len(pipeline.keys(pipeline.buckets.incoming)) == 1, 30)
    slow_s3.delay = 0.0
    assert wait_until(lambda: journal_entries(pipeline) == [], 30)
    assert wait_until(lambda: queued(pipeline) == 1)
    assert journal_entries(pipeline, "partial") == []


def test_objects_received_while_the_broker_is_slow_are_announced_once_it_answers(
    pipeline: Pipeline, slow_amqp: SlowProxy
) -> None:
    pipeline.start("scp_ingest", SCP_STORE_TIMEOUT="1",
                   AMQP_URL=f"amqp://guest:guest@{slow_amqp.endpoint}/")
    slow_amqp.delay = 2.5  # every confirmation comes 2.5 s late
    started = time.monotonic()
    assert [store(pipeline, ct_object()) for _ in range(2)] == [0x0000, 0x0000]
    assert time.monotonic() - started < 3.0
    slow_amqp.delay = 0.0
    assert wait_until(lambda: journal_entries(pipeline) == [], 30)
    assert len(pipeline.keys(pipeline.buckets.incoming)) == 2
    assert wait_until(lambda: queued(pipeline) == 2)


def test_what_a_stop_leaves_in_the_journal_is_relayed_at_the_next_start(
    pipeline: Pipeline, slow_s3: SlowProxy
) -> None:
    """A stop does not wait for a slow store's answer beyond SCP_STORE_TIMEOUT (the upload
    already sent finishes, unannounced): the entry stays in the journal (it was answered
    Success) and the next start relays it, under the same key."""
    scp = pipeline.start("scp_ingest", S3_ENDPOINT=slow_s3.endpoint, SCP_STORE_TIMEOUT="1")
    slow_s3.delay = 6.0
    assert store(pipeline, ct_object()) == 0x0000
    scp.stop()  # SIGTERM
    assert scp.process.returncode == 0, scp.log.read_text()[-2000:]
    assert len(journal_entries(pipeline)) == 1
    assert queued(pipeline) == 0
    slow_s3.delay = 0.0
    pipeline.start("scp_ingest")
    assert wait_until(lambda: journal_entries(pipeline) == [], 30)
    assert len(pipeline.keys(pipeline.buckets.incoming)) == 1
    assert wait_until(lambda: queued(pipeline) == 1)


def test_a_kill_9_in_the_middle_of_a_send_loses_nothing_answered_success(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """storescu sends 300 objects; the SCP is killed (SIGKILL) while it receives them.
    Every object it answered Success for is in the incoming bucket after a restart, and
    nothing half received is left anywhere."""
    folder = tmp_path / "series"
    folder.mkdir()
    for number, dataset in enumerate(synth.make_ct_series(300, series_number=77)):
        synth.write(dataset, folder / f"{number:04d}.dcm")
    scp = pipeline.start("scp_ingest", SCP_PROCESSES="2")
    sender = subprocess.Popen(
        ["/usr/bin/storescu", "-v", "-aec", "ANONSCP", "+sd", "127.0.0.1",
         str(pipeline.scp_port), str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.6)
    scp.kill()
    output, _ = sender.communicate(timeout=60)
    answered = output.count("Received Store Response (Success)")
    assert 0 < answered < 300, output[-2000:]
    pipeline.start("scp_ingest")
    assert wait_until(lambda: journal_entries(pipeline) == [], 60)
    assert journal_entries(pipeline, "partial") == []
    kept = pipeline.keys(pipeline.buckets.incoming)
    # Answered objects all kept; at most the one being answered when the kill came more.
    assert answered <= len(kept) <= answered + 2, (answered, len(kept))


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB file system of its own (tmpfs), for a journal that fills."""
    mount = tmp_path / "volume"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_journal_volume_is_answered_out_of_resources_with_nothing_half_kept(
    pipeline: Pipeline, small_volume: Path, slow_s3: SlowProxy
) -> None:
    """The relay is held back (the store answers late), so the journal fills: objects
    that fit are answered Success, the first that does not is A700 (the volume fills
    during its write), and nothing of it is left; once relayed, all Success ones are kept."""
    journal = small_volume / "journal"
    pipeline.start("scp_ingest", S3_ENDPOINT=slow_s3.endpoint, SCP_SPOOL_DIR=str(journal),
                   SCP_JOURNAL_MIN_FREE_BYTES="0")
    slow_s3.delay = 60.0
    assoc = associate(pipeline)
    statuses = []
    for _ in range(40):  # 0.5 MB each: about 12 fit in 6 MiB
        answer = assoc.send_c_store(ct_object(rows=512))
        statuses.append(int(answer.Status))
        if statuses[-1] != 0:
            break
    assoc.release()
    assert statuses[-1] == 0xA700 and set(statuses[:-1]) == {0}, statuses
    assert list((journal / "partial").iterdir()) == []
    ready = sorted((journal / "ready").iterdir())
    assert len(ready) == len(statuses) - 1
    slow_s3.delay = 0.0
    assert wait_until(lambda: not list((journal / "ready").iterdir()), 120)
    assert len(pipeline.keys(pipeline.buckets.incoming)) == len(statuses) - 1


def test_a_journal_below_its_free_space_reserve_refuses_before_reading(
    pipeline: Pipeline,
) -> None:
    scp = pipeline.start("scp_ingest", SCP_JOURNAL_MIN_FREE_BYTES=str(1 << 60))
    assert store(pipeline, ct_object()) == 0xA700
    assert journal_entries(pipeline) == [] and journal_entries(pipeline, "partial") == []
    assert "journal" in scp.log.read_text()


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
    (spool / "partial").mkdir(parents=True)
    (spool / "partial" / "0f3e.dcm").write_bytes(b"PHI of a half-received object")
    (spool / "notes.txt").write_text("not the SCP's")
    scp = pipeline.start("scp_ingest", MAX_OBJECT_BYTES="100000", SCP_SPOOL_DIR=str(spool))
    assert list((spool / "partial").iterdir()) == []  # cleared at start
    assert sorted(p.name for p in spool.iterdir()) == ["notes.txt", "partial", "ready"]
    assoc = associate(pipeline)
    assert assoc.is_established
    status = assoc.send_c_store(ct_object(rows=1024))  # 2 MiB: far beyond the limit
    assert "Status" not in status  # cut off before the data set was all received
    deadline = time.monotonic() + 5
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not assoc.is_established
    time.sleep(0.5)
    assert list((spool / "partial").iterdir()) == [] and list((spool / "ready").iterdir()) == []
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


def test_the_association_limit_holds_for_the_receiver_processes_together(
    pipeline: Pipeline
) -> None:
    pipeline.start("scp_ingest", SCP_PROCESSES="2", SCP_MAX_ASSOCIATIONS="3")
    held = [associate(pipeline) for _ in range(3)]
    try:
        assert all(a.is_established for a in held)  # two in one receiver, one in the other
        fourth = associate(pipeline)
        assert fourth.is_rejected and not fourth.is_established
        rejection = fourth.acceptor.primitive
        assert rejection is not None
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (2, 3, 2)
        held.pop(0).release()
        time.sleep(0.5)
        again = associate(pipeline)  # the place given back, in whichever receiver
        held.append(again)
        assert again.is_established
        assert again.send_c_echo().Status == 0
    finally:
        for assoc in held:
            if assoc.is_established:
                assoc.release()


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
    assert wait_until(lambda: len(pipeline.keys(pipeline.buckets.incoming)) == 1)
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
    time.sleep(1.0)  # what a relay would have taken by now
    assert len(pipeline.keys(pipeline.buckets.incoming)) == 1
    assert journal_entries(pipeline) == [] and journal_entries(pipeline, "partial") == []


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
