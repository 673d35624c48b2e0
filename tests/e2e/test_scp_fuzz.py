"""Fuzzing the Storage SCP's upper layer through its TCP port: 10,000 PDUs, valid ones
(A-ASSOCIATE-RQ with presentation contexts, P-DATA-TF with a C-STORE-RQ command and its
data set fragments, C-ECHO, A-RELEASE-RQ, A-ABORT) and mutations of them (lengths, PDU and
item types, truncated, extended, flipped bytes, random bytes) in any order, over many
connections, against one running SCP.

Every connection must get what PS3.8 allows (A-ASSOCIATE-AC/RJ, P-DATA-TF, A-RELEASE-RP,
A-ABORT) or a closed connection, and must end within the SCP's timeouts (a connection
still open past them counts as a hang). After the run the SCP is alive, never logged a
traceback, answers a C-ECHO and a valid C-STORE, and keeps nothing half received: no file
in its journal once drained, every C-STORE answered Success in the bucket, and nothing in
the bucket but complete objects of the run.

The seed is printed (and can be set with SCP_FUZZ_SEED) so a failure can be replayed;
each connection's PDUs depend only on the seed and the connection's number."""

from __future__ import annotations

import io
import os
import random
import select
import struct
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from shared.ingest import uid_digest
from tests import dul_support as dul
from tests import synth
from tests.e2e.test_scp_conformance import drained, left_in, start, stored_objects
from tests.pipeline_support import Pipeline

pytestmark = pytest.mark.integration

PDUS = 10_000
WORKERS = 16
SEED = int(os.environ.get("SCP_FUZZ_SEED", "20261202"))
TIMEOUT = 1.0  # SCP_ACSE_TIMEOUT, SCP_NETWORK_TIMEOUT and SCP_DIMSE_TIMEOUT of the run
HANG = TIMEOUT + 4.0  # a connection still open this long after our last PDU hangs
UID_ROOT = "1.2.826.0.1.3680043.9.3811.5."
CT = str(CTImageStorage)
ITEM_TYPES = [0x10, 0x20, 0x21, 0x30, 0x40, 0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57,
              0x58, 0x59, 0x00, 0xFF]


def instance_uid(number: int) -> str:
    return f"{UID_ROOT}{number + 10**8}"


def base_data_set() -> bytes:
    """A small CT data set (explicit VR little endian) whose SOP Instance UID is
    ``instance_uid(0)``; others are made by replacing it (the same length)."""
    ds = synth.make_ct_series(1, rows=16, cols=16, series_number=77)[0]
    ds.SOPInstanceUID = instance_uid(0)
    ds.file_meta = synth._file_meta(CT, ds.SOPInstanceUID, ExplicitVRLittleEndian)
    return dul.encoded(ds)


def contexts(rng: random.Random) -> list[tuple[int, str, list[str]]]:
    proposed = [(1, dul.VERIFICATION, [dul.IMPLICIT_LE]), (3, CT, [dul.EXPLICIT_LE])]
    for n in range(rng.randint(0, 4)):
        proposed.append((5 + 2 * n, rng.choice([CT, "1.2.3.4.5", dul.VERIFICATION]),
                         rng.sample([dul.EXPLICIT_LE, dul.IMPLICIT_LE, "1.2.840.10008.1.2.5",
                                     "1.2.3.999"], rng.randint(1, 3))))
    return proposed


def valid_pdus(rng: random.Random, data_set: bytes, uid: str) -> list[bytes]:
    """The valid PDUs of one C-STORE association, in their order."""
    pieces = dul.fragments(3, data_set, rng.choice([128, 256, 512, 4096]), command=False)
    return [dul.associate_rq(contexts(rng), max_length=rng.choice([0, 4096, 16384]),
                             window=rng.choice([None, (1, 1), (4, 4)])),
            dul.p_data(1, dul.c_echo_rq(rng.randint(1, 65535)), command=True, last=True),
            dul.p_data(3, dul.c_store_rq(CT, uid, rng.randint(1, 65535)), command=True,
                       last=True),
            *pieces, dul.release_rq()]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One or a few mutations of a PDU."""
    out = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        how = rng.randrange(10)
        if how == 0 and len(out) >= 6:  # PDU length
            length = rng.choice([0, 1, 3, 4, len(out) - 7, len(out) - 5, len(out) + 100,
                                 0xFFFFFFFF, 0x7FFFFFFF, rng.randrange(1 << 32)])
            struct.pack_into(">L", out, 2, max(0, min(length, 0xFFFFFFFF)))
        elif how == 1 and out:  # PDU type
            out[0] = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 0x0A, 0x7F, 0xFF])
        elif how == 2 and len(out) > 10:  # an item type (or the PDV header) somewhere
            out[rng.randrange(6, len(out))] = rng.choice(ITEM_TYPES)
        elif how == 3 and len(out) > 12:  # an item or PDV length somewhere
            offset = rng.randrange(6, len(out) - 2)
            struct.pack_into(">H", out, offset, rng.choice([0, 1, 0xFFFF, rng.randrange(65536)]))
        elif how == 4 and out:  # truncate
            del out[rng.randrange(len(out)):]
        elif how == 5:  # extend
            out += rng.randbytes(rng.randint(1, 300))
        elif how == 6 and out:  # flip bytes
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif how == 7:  # random bytes
            out = bytearray(rng.randbytes(rng.randint(0, 200)))
        elif how == 8 and len(out) > 12:  # the PDV's context id or header byte
            out[rng.choice([10, 11])] = rng.randrange(256)
        else:  # a segment repeated
            if out:
                start_at = rng.randrange(len(out))
                out[start_at:start_at] = out[start_at:start_at + rng.randint(1, 64)]
    return bytes(out)


def plan(number: int, data_set: bytes) -> tuple[list[bytes], bool]:
    """The PDUs of connection ``number`` and whether it waits for the SCP to end it (else
    it closes or resets the connection itself after its last PDU)."""
    rng = random.Random(SEED * 1_000_003 + number)
    uid = instance_uid(number + 1)
    valid = valid_pdus(rng, data_set.replace(instance_uid(0).encode(), uid.encode()), uid)
    pdus: list[bytes] = []
    if rng.random() < 0.6:
        pdus.append(valid[0])  # a valid association first
        cursor = 1
    else:
        cursor = 0
    for _ in range(rng.randint(3, 12)):
        roll = rng.random()
        if roll < 0.45 and cursor < len(valid):  # the next valid PDU, in order
            pdus.append(valid[cursor])
            cursor += 1
        elif roll < 0.6:  # any valid PDU, out of order
            pdus.append(rng.choice([*valid, dul.release_rp(), dul.abort(0, 0),
                                    dul.pdu(dul.ASSOCIATE_AC, valid[0][6:])]))
        else:
            pdus.append(mutate(rng.choice(valid), rng))
    return pdus, rng.random() < 0.7


@dataclass
class Outcome:
    """What one connection saw."""

    number: int
    sent: int = 0
    unexpected: list[str] = field(default_factory=list)
    hung: bool = False
    stored: set[str] = field(default_factory=set)  # SOP Instance UIDs answered Success
    answers: Counter[int] = field(default_factory=Counter)  # PDUs received, by type


def note(outcome: Outcome, received: list[tuple[int, bytes]]) -> None:
    for kind, body in received:
        outcome.answers[kind] += 1
        if kind not in dul.SCP_PDU_TYPES:
            outcome.unexpected.append(f"PDU type {kind:#x}")
        if kind != dul.P_DATA_TF or len(body) < 6:
            continue
        if body[5] & 3 == 3:  # a whole command in one PDV
            fields = dul.command_fields(body[6:])
            if fields.get(0x0100) == struct.pack("<H", dul.C_STORE_RSP) \
                    and fields.get(0x0900) == b"\x00\x00":
                outcome.stored.add(fields.get(0x1000, b"").decode().rstrip("\0"))


def available(peer: dul.Peer) -> list[tuple[int, bytes]]:
    """The PDUs the SCP has sent so far (without waiting); Closed when it closed."""
    received = []
    while select.select([peer.sock], [], [], 0)[0]:
        received.append(peer.receive())
    return received


def connection(port: int, number: int, data_set: bytes) -> Outcome:
    pdus, wait = plan(number, data_set)
    outcome = Outcome(number)
    try:
        peer = dul.Peer(port, timeout=HANG)
    except OSError as exc:
        outcome.unexpected.append(f"connect: {exc}")
        return outcome
    try:
        for data in pdus:
            try:
                peer.send(data)
                outcome.sent += 1
                note(outcome, available(peer))
            except (OSError, dul.Closed):
                return outcome  # the SCP ended it: fine
        if not wait:
            if number % 2:
                peer.vanish()
            return outcome
        try:
            note(outcome, peer.ending(within=HANG))
        except TimeoutError:
            outcome.hung = True
        except OSError:
            pass
        return outcome
    finally:
        peer.close()


def test_ten_thousand_fuzzed_pdus_leave_the_scp_serving_and_nothing_half_kept(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    print(f"SCP fuzz seed {SEED} (replay: SCP_FUZZ_SEED={SEED})")
    scp, spool = start(pipeline, tmp_path, SCP_ACSE_TIMEOUT=str(TIMEOUT),
                       SCP_NETWORK_TIMEOUT=str(TIMEOUT), SCP_DIMSE_TIMEOUT=str(TIMEOUT),
                       SCP_MAX_ASSOCIATIONS="64", SCP_MAX_PDU_SIZE="16384")
    data_set = base_data_set()
    numbers: list[int] = []
    total = 0
    while total < PDUS:
        numbers.append(len(numbers))
        total += len(plan(numbers[-1], data_set)[0])
    started = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = list(pool.map(lambda n: connection(pipeline.scp_port, n, data_set),
                                 numbers))
    elapsed = time.monotonic() - started
    sent = sum(o.sent for o in outcomes)
    answers = sum((o.answers for o in outcomes), Counter[int]())
    print(f"{len(numbers)} connections, {total} PDUs planned, {sent} sent, {elapsed:.1f} s; "
          f"answers by PDU type {dict(sorted(answers.items()))}, "
          f"{sum(len(o.stored) for o in outcomes)} C-STOREs answered Success")
    hung = [o.number for o in outcomes if o.hung]
    unexpected = [(o.number, o.unexpected) for o in outcomes if o.unexpected]
    assert not hung, f"connections still open past the timeouts (seed {SEED}): {hung[:20]}"
    assert not unexpected, f"answers PS3.8 does not allow (seed {SEED}): {unexpected[:20]}"
    assert scp.process.poll() is None, scp.log.read_text()[-3000:]
    assert "Traceback" not in scp.log.read_text()

    # Still serving: a C-ECHO and a valid C-STORE.
    final = instance_uid(88_888_888)
    with dul.Peer(pipeline.scp_port) as peer:
        accepted = peer.associate([(1, dul.VERIFICATION, [dul.IMPLICIT_LE]),
                                   (3, CT, [dul.EXPLICIT_LE])])
        assert peer.echo().status == 0x0000
        answer = peer.store(3, CT, final,
                            data_set.replace(instance_uid(0).encode(), final.encode()),
                            accepted.max_length)
        assert (answer.command_field, answer.status) == (dul.C_STORE_RSP, 0x0000)
        peer.release()

    # Nothing half kept: the journal drains; every C-STORE we saw answered Success is in
    # the bucket, and the bucket holds only complete objects of the run. (An object can
    # be answered Success after its connection was closed by the fuzzer, unread: so the
    # bucket may hold a few more than the answers seen.)
    answered = {final} | set().union(*(o.stored for o in outcomes))
    deadline = time.monotonic() + 30
    while left_in(spool) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left_in(spool), [p.name for p in left_in(spool)][:10]
    objects = stored_objects(pipeline)
    # A response names the command's SOP Instance UID; one whose command was mutated names
    # a UID the run never made, and the object is kept under its data set's UID.
    ours = {uid_digest(instance_uid(n + 1)) for n in numbers} | {uid_digest(final)}
    missing = {uid_digest(uid) for uid in answered} & ours - set(objects)
    assert not missing, f"{len(missing)} objects answered Success are not kept (seed {SEED})"
    store_rq = struct.pack("<HHLH", 0x0000, 0x0100, 2, dul.C_STORE_RQ)  # command field
    stores = sum(sum(store_rq in pdu for pdu in plan(n, data_set)[0]) for n in numbers) + 1
    assert len(objects) <= stores, f"{len(objects)} objects from {stores} C-STORE-RQs"
    for data in objects.values():
        ds = dcmread(io.BytesIO(data))
        assert len(ds.PixelData) == 16 * 16 * 2
    drained(pipeline, spool, len(objects), timeout=5)
    assert "Traceback" not in scp.log.read_text()
