"""How the receivers share their port and how the journal takes a data set, on real
sockets and files (no DICOM peer: the mechanics under the protocol)."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import socket
import threading
from pathlib import Path

import pytest

from services.scp_ingest import journal as journal_module
from services.scp_ingest.journal import WRITEBACK_STEP, Journal, JournalSink, Relay
from services.scp_ingest.receivers import listening_sockets
from services.scp_ingest.scp import ASSOCIATIONS, CONNECTIONS, Places, ScpOptions, StorageSCP


def test_places_hold_a_limit_for_every_receiver_together() -> None:
    counts = Places.shared_counts(multiprocessing.get_context("spawn"), 2)
    first, second = Places(counts, 0), Places(counts, 1)
    assert [first.take(ASSOCIATIONS, 3), first.take(ASSOCIATIONS, 3),
            second.take(ASSOCIATIONS, 3)] == [True, True, True]
    assert not second.take(ASSOCIATIONS, 3) and not first.take(ASSOCIATIONS, 3)
    assert second.take(CONNECTIONS, 1)  # each kind has its own count
    assert (first.held(ASSOCIATIONS), second.held(ASSOCIATIONS)) == (2, 1)
    first.give_back(ASSOCIATIONS)
    assert second.take(ASSOCIATIONS, 3) and not first.take(ASSOCIATIONS, 3)
    assert list(counts) == [0, 1, 1, 2]
    # A receiver started again in slot 1: its pair is set back to zero.
    Places.clear(counts, 1)
    assert first.take(ASSOCIATIONS, 3)
    alone = Places()  # one process on its own: only its own places count
    assert alone.take(ASSOCIATIONS, 1) and not alone.take(ASSOCIATIONS, 1)


def test_listening_sockets_share_one_port_for_every_address() -> None:
    sockets = listening_sockets("127.0.0.1", 0)
    try:
        assert len(sockets) == 1
        port = sockets[0].getsockname()[1]
        assert port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # listening already: the receivers only accept
    finally:
        for sock in sockets:
            sock.close()
    dual = listening_sockets("localhost", 0)
    try:
        assert len({sock.getsockname()[1] for sock in dual}) == 1
    finally:
        for sock in dual:
            sock.close()


async def _spread(tmp_path: Path, connections: int) -> list[int]:
    """Two SCPs (as two receiver processes would be) on one listening socket; how many of
    ``connections`` opened at once each one takes."""
    listener = listening_sockets("127.0.0.1", 0)[0]
    port = listener.getsockname()[1]
    scps = []
    for slot in range(2):
        scp = StorageSCP(Journal(tmp_path / f"journal-{slot}"), "ANONSCP", ScpOptions())
        # Each process has its own descriptor of the one socket, as a child inherits it.
        scp.share([listener.dup()], processes=2)
        scps.append(scp)
    opened = []
    try:
        for _ in range(connections):
            opened.append(await asyncio.open_connection("127.0.0.1", port))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if sum(len(scp._accepting) for scp in scps) == connections:
                break
        return sorted(len(scp._accepting) for scp in scps)
    finally:
        for _, writer in opened:
            writer.close()
        for scp in scps:
            await scp.stop()
        listener.close()


@pytest.mark.parametrize("connections", [2, 4, 6])
def test_connections_arriving_at_once_are_spread_evenly_over_the_receivers(
        tmp_path: Path, connections: int) -> None:
    # SO_REUSEPORT hashed four associations over two processes as 3 and 1 half the time.
    for attempt in range(5):
        assert asyncio.run(_spread(tmp_path / str(attempt), connections)) == [
            connections // 2, connections // 2]


def test_a_lone_receiver_accepts_without_waiting(tmp_path: Path) -> None:
    async def scenario() -> int:
        listener = listening_sockets("127.0.0.1", 0)[0]
        scp = StorageSCP(Journal(tmp_path / "journal"), "ANONSCP", ScpOptions())
        scp.share([listener], processes=1)
        opened = [await asyncio.open_connection("127.0.0.1", scp.port) for _ in range(3)]
        await asyncio.sleep(0.05)
        accepted = len(scp._accepting)
        for _, writer in opened:
            writer.close()
        await scp.stop()
        listener.close()
        return accepted

    assert asyncio.run(scenario()) == 3


def test_a_large_data_set_is_handed_to_the_disk_in_steps_and_kept_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[int, int]] = []
    monkeypatch.setattr(journal_module, "_writeback",
                        lambda fd, offset, length, flags: started.append((offset, length)) or 0)
    journal = Journal(tmp_path / "journal")
    header = b"H" * 200
    sink = JournalSink(journal, "PACS", header, None, None)
    payload = os.urandom(3 * WRITEBACK_STEP + 12345)
    for at in range(0, len(payload), 16376):  # P-DATA fragments as a 16 KB PDU carries
        sink.write(memoryview(payload)[at:at + 16376])
    assert (tmp_path / "journal" / "partial" / sink.path.name).read_bytes() == header + payload
    # Contiguous steps from the start, each at least one step long, covering all but the
    # last step's worth (the commit's fdatasync writes that), none past the end.
    total = len(header) + len(payload)
    assert len(started) >= 2 and started[0][0] == 0
    for (offset, length), (following, _) in itertools.pairwise(started):
        assert following == offset + length
    assert all(length >= WRITEBACK_STEP for _, length in started)
    assert total - WRITEBACK_STEP < started[-1][0] + started[-1][1] <= total
    sink.discard()
    assert list((tmp_path / "journal" / "partial").iterdir()) == []


def test_the_real_writeback_call_accepts_a_file(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with path.open("wb") as handle:
        handle.write(b"x" * (2 * WRITEBACK_STEP))
        handle.flush()
        journal_module.start_writeback(handle.fileno(), 0, 2 * WRITEBACK_STEP)
    assert path.stat().st_size == 2 * WRITEBACK_STEP


@pytest.mark.parametrize("associations", [1, 2])
def test_with_several_associations_a_commit_leaves_the_event_loop_free(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, associations: int) -> None:
    journal_dir = tmp_path / "journal"
    flushed_on: list[str] = []

    async def scenario() -> None:
        journal = Journal(journal_dir)
        journal.associations = associations
        original = journal._flush

        def recording(group):  # type: ignore[no-untyped-def]
            flushed_on.append(threading.current_thread().name)
            return original(group)

        monkeypatch.setattr(journal, "_flush", recording)
        fd, partial = journal.open_entry()
        os.write(fd, b"data set")
        journal.close_entry(partial)
        await journal.commit(fd, partial, "entry.dcm")

    asyncio.run(scenario())
    assert (journal_dir / "ready" / "entry.dcm").read_bytes() == b"data set"
    on_loop = flushed_on == [threading.main_thread().name]
    assert on_loop == (associations == 1)


class _SlowIngest:
    """Stands in for the object store and the broker: each relay takes a moment."""

    def __init__(self) -> None:
        self.relayed: list[str] = []

    async def relay_file(self, entry: Path, key: str, source: str, calling_ae: str) -> None:
        await asyncio.sleep(0.01)
        self.relayed.append(key)


def _ready_entry(journal: Journal, n: int) -> None:
    digest = f"{n:064x}"
    name = journal_module.entry_name(f"{digest[:2]}/{digest}.{n:012x}.dcm", "PACS", False)
    (journal.ready / name).write_bytes(b"object")


def test_the_relay_notices_a_new_burst_between_chunks_and_leaves_the_cores_to_it(
        tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int, int]:
        journal = Journal(tmp_path / "journal")
        for n in range(400):
            _ready_entry(journal, n)
        ingest = _SlowIngest()
        relay = Relay(journal, ingest, concurrency=8, poll_seconds=0.02,  # type: ignore[arg-type]
                      quiet_seconds=0.4, max_deferred=100_000)
        relay.start()
        try:
            while not ingest.relayed:  # it waits for the first burst to end, then relays
                await asyncio.sleep(0.005)
            _ready_entry(journal, 400)  # a new object arrives while it relays
            at_arrival = len(ingest.relayed)
            await asyncio.sleep(0.25)
            meanwhile = len(ingest.relayed) - at_arrival
            for _ in range(500):
                if len(ingest.relayed) == 401:
                    break
                await asyncio.sleep(0.02)
            return at_arrival, meanwhile, len(ingest.relayed)
        finally:
            await relay.stop()

    at_arrival, meanwhile, total = asyncio.run(scenario())
    # At most the chunk under way is finished during the new burst's quiet period
    # (400 entries in one go would all have been relayed within it).
    assert meanwhile <= 8 * journal_module.RELAY_CHUNK_ROUNDS < 400, (at_arrival, meanwhile)
    assert total == 401
