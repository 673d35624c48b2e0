"""Send mutated DICOM files to a running ``anon serve`` by C-STORE and account for each.

    python -m fuzz.serve_mutated [--count 1000] [--server postgresql://postgres@127.0.0.1:5432]
                                 [--seed 1] [--keep] [--json FILE]

Starts ``anon serve`` on a new data folder, with ``DATABASE_URL`` pointing to a new
database on ``--server`` and the Storage SCP on a free port, then sends ``--count``
mutations of the seed files (``fuzz.seeds``: test samples and synthetic objects with
planted PHI) over one association (a new one whenever the SCP ends it), each by pynetdicom
from its file, so the data set goes out byte for byte as mutated. Every mutant gets its own
SOP Instance UID before it is mutated, so its fate can be found. Mutations: bit flips
(anywhere, or inside one value), truncations, changed length fields, changed VRs, nested
sequences (up to 3,000 levels, some sent as UN), pieces of other seeds spliced in. The
file meta is left alone: it is not sent over the network.

Checks:

- the service keeps answering: a C-ECHO after every 100 files;
- every file gets a C-STORE status (files answered A700, "out of resources, retry", or
  without an answer are sent again, twice at most, as a sender would);
- at the end every file is de-identified (an ``instance`` row for its SOP Instance UID) or
  quarantined with a reason (its bytes in the quarantine bucket and a
  ``quarantined_object`` row with a reason), and ``anon status`` agrees with the tables;
- no de-identified output holds the planted patient name or ID, except in an attribute
  the default profile keeps (``fuzz.leaks``).

Prints the counts and writes them to ``--json``; exits 1 when a file is unaccounted for,
an output leaks, or the service stopped answering. The data folder and the database are
removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from fuzz.leaks import leak
from fuzz.seeds import seeds
from shared.deid.options import ProfileOptions
from shared.deid.profile import build_profile
from shared.dicom.errors import RejectedObject
from shared.dicom.parse import LONG_VRS, UNDEFINED_LENGTH, Element, Item, parse
from tests import synth

ANON = Path(sys.executable).with_name("anon")
AE_TITLE = "ANONSCP"
DEFLATED = "1.2.840.10008.1.2.1.99"
MAX_SEED_BYTES = 256 * 1024
MAX_CONTEXTS = 120
SUCCESS, OUT_OF_RESOURCES = 0x0000, 0xA700
RULES = build_profile(ProfileOptions.ricord())  # the default of anon serve
PLANTED = sorted({value for i in range(4)
                  for value in (synth.phi_for(i).patient_name.encode(),
                                synth.phi_for(i).patient_id.encode())})


# --- the seeds, as meta + plain data set ------------------------------------------------


def meta_end(data: bytes) -> int:
    """Offset just past the file meta (group 0002, explicit VR little endian)."""
    if data[128:132] != b"DICM":
        return -1
    pos = 132
    while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        vr = data[pos + 4 : pos + 6].decode("latin-1")
        if vr in LONG_VRS:
            pos += 12 + struct.unpack_from("<L", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return pos


def meta_values(data: bytes) -> dict[int, str]:
    """The text of each file meta element."""
    values: dict[int, str] = {}
    pos, end = 132, meta_end(data)
    while pos < end:
        group, number = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4 : pos + 6].decode("latin-1")
        if vr in LONG_VRS:
            header, length = 12, struct.unpack_from("<L", data, pos + 8)[0]
        else:
            header, length = 8, struct.unpack_from("<H", data, pos + 6)[0]
        value = data[pos + header : pos + header + length]
        values[group << 16 | number] = value.decode("latin-1").rstrip(" \x00")
        pos += header + length
    return values


@dataclass
class Seed:
    name: str
    meta: bytes  # preamble, DICM and file meta
    plain: bytes  # the data set, inflated when the transfer syntax is deflated
    sop_class: str
    transfer_syntax: str
    little_endian: bool
    explicit: bool
    elements: list[Element]  # at every depth; offsets into ``plain``
    sop_uid: Element | None  # (0008,0018) at the top level, offsets into ``plain``
    meta_uid: Element | None  # (0002,0003), offsets into ``meta``


def _all_elements(item: Item, shift: int, out: list[Element]) -> None:
    for element in item.elements.values():
        out.append(Element(element.tag, element.vr, element.start - shift,
                           element.value - shift, element.length, element.end - shift))
        for child in element.items or []:
            _all_elements(child, shift, out)


def load_seeds() -> list[Seed]:
    found: list[Seed] = []
    contexts: set[tuple[str, str]] = set()
    for name, data in seeds():
        if len(data) > MAX_SEED_BYTES or (end := meta_end(data)) < 0:
            continue
        try:
            obj = parse(data)
        except RejectedObject:
            continue
        sop_class = obj.get_text(0x00080016) or ""
        meta_class = obj.meta.elements.get(0x00020002)
        if not sop_class or meta_class is None:
            continue
        context = (obj.text(meta_class), obj.transfer_syntax_uid)
        if context not in contexts and len(contexts) >= MAX_CONTEXTS:
            continue
        contexts.add(context)
        elements: list[Element] = []
        _all_elements(obj.dataset, end, elements)
        shifted = {e.tag: e for e in elements if e.tag == 0x00080018}
        found.append(Seed(
            name=name, meta=data[:end], plain=obj.buffer[end:], sop_class=context[0],
            transfer_syntax=obj.transfer_syntax_uid, little_endian=obj.syntax.little_endian,
            explicit=obj.syntax.explicit_vr, elements=elements,
            sop_uid=shifted.get(0x00080018), meta_uid=obj.meta.elements.get(0x00020003),
        ))
    return found


# --- mutations -----------------------------------------------------------------------------


def _same_length_uid(length: int, n: int) -> bytes:
    """A new UID of exactly ``length`` bytes (NUL padded), unique per ``n``."""
    text = f"2.25.{n}"
    digits = length - len(text)
    if digits > 0:
        text = f"2.25.{n}" + "".join(str((n * 7 + k) % 10) for k in range(digits))
        text = text[:length]
    return text.encode()[:length].ljust(length, b"\x00")


def with_uid(seed: Seed, n: int) -> tuple[bytes, bytearray, str]:
    """Meta and plain data set of ``seed`` with a new SOP Instance UID (same length)."""
    meta, plain = bytearray(seed.meta), bytearray(seed.plain)
    uid = ""
    if seed.sop_uid is not None and seed.sop_uid.length >= 12:
        value = _same_length_uid(seed.sop_uid.length, 10**9 + n)
        plain[seed.sop_uid.value : seed.sop_uid.value + seed.sop_uid.length] = value
        uid = value.rstrip(b"\x00 ").decode()
        element = seed.meta_uid
        if element is not None and element.length == seed.sop_uid.length:
            meta[element.value : element.value + element.length] = value
    return bytes(meta), plain, uid


def _header(tag: int, vr: str, length: int, little: bool, explicit: bool) -> bytes:
    p = "<" if little else ">"
    if not explicit:
        return struct.pack(p + "HHL", tag >> 16, tag & 0xFFFF, length)
    if vr in LONG_VRS:
        return struct.pack(p + "HH2s2xL", tag >> 16, tag & 0xFFFF, vr.encode(), length)
    return struct.pack(p + "HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), length)


def nested_sequence(depth: int, little: bool, explicit: bool, as_un: bool) -> bytes:
    """(0008,1140) nested ``depth`` levels deep, the planted name and ID innermost; built
    inside out with defined lengths. ``as_un``: the outermost header says UN and the items
    are implicit VR little endian, as a PACS sends a sequence it does not know."""
    inner_little, inner_explicit = (True, False) if as_un else (little, explicit)
    name, pid = synth.PHI.patient_name.encode(), synth.PHI.patient_id.encode() + b" "
    content = (_header(0x00100010, "PN", len(name), inner_little, inner_explicit) + name
               + _header(0x00100020, "LO", len(pid), inner_little, inner_explicit) + pid)
    p = "<" if inner_little else ">"
    for level in range(depth):
        item = struct.pack(p + "HHL", 0xFFFE, 0xE000, len(content)) + content
        outermost = level == depth - 1
        if outermost and as_un:
            return _header(0x00081140, "UN", len(item), little, explicit) + item
        content = _header(0x00081140, "SQ", len(item), inner_little, inner_explicit) + item
    return content


@dataclass
class Mutant:
    index: int
    seed: str
    operations: list[str]
    uid: str
    path: Path
    sent: bytes  # the data set as sent (after the file meta)
    digest: str = ""
    statuses: list[str] = field(default_factory=list)
    outcome: str = ""


class Mutator:
    def __init__(self, all_seeds: list[Seed], rng: random.Random) -> None:
        self.seeds = all_seeds
        self.rng = rng

    def bit_flips(self, seed: Seed, data: bytearray) -> str:
        flips = self.rng.choice((1, 2, 4, 8, 16))
        for _ in range(flips):
            if data:
                data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
        return f"bit-flips({flips})"

    def value_flips(self, seed: Seed, data: bytearray) -> str:
        """Bit flips inside one element's value, headers left alone."""
        element = self._element(seed, data)
        if element is None or element.length in (0, UNDEFINED_LENGTH):
            return self.bit_flips(seed, data)
        end = min(element.value + element.length, len(data))
        flips = self.rng.choice((1, 2, 4))
        for _ in range(flips):
            if element.value < end:
                data[self.rng.randrange(element.value, end)] ^= 1 << self.rng.randrange(8)
        return f"value-flips({flips})"

    def truncate(self, seed: Seed, data: bytearray) -> str:
        cut = self.rng.randrange(len(data) + 1)
        del data[cut:]
        return "truncate"

    def _element(self, seed: Seed, data: bytearray) -> Element | None:
        usable = [e for e in seed.elements if e.end <= len(data) and e.tag != 0x00080018]
        return self.rng.choice(usable) if usable else None

    def length_field(self, seed: Seed, data: bytearray) -> str:
        element = self._element(seed, data)
        if element is None:
            return "length(none)"
        p = "<" if seed.little_endian else ">"
        short = seed.explicit and element.vr not in LONG_VRS
        original = element.length
        choices = [0, 1, original + 1, max(0, original - 1), original * 2 + 2, 0xFFFF,
                   self.rng.randrange(1 << 16)]
        if not short:
            choices += [UNDEFINED_LENGTH, 0x7FFFFFFF, self.rng.randrange(1 << 32)]
        value = self.rng.choice(choices)
        if short:
            struct.pack_into(p + "H", data, element.start + 6, value & 0xFFFF)
        elif seed.explicit:
            struct.pack_into(p + "L", data, element.start + 8, value & 0xFFFFFFFF)
        else:
            struct.pack_into(p + "L", data, element.start + 4, value & 0xFFFFFFFF)
        return "length"

    def vr(self, seed: Seed, data: bytearray) -> str:
        element = self._element(seed, data)
        if element is None or not seed.explicit:
            return self.bit_flips(seed, data)
        new = self.rng.choice((b"UN", b"SQ", b"OB", b"PN", b"LO", b"UT", b"US", b"XX",
                               b"\x00\x00"))
        data[element.start + 4 : element.start + 6] = new
        return f"vr({new.decode('latin-1')!r})"

    def nest(self, seed: Seed, data: bytearray) -> str:
        depth = self.rng.choice((2, 8, 40, 200, 3000))
        as_un = seed.explicit and self.rng.random() < 0.4
        block = nested_sequence(depth, seed.little_endian, seed.explicit, as_un)
        top = [e for e in seed.elements if e.start >= 0 and e.end <= len(data)]
        existing = [e for e in top if e.tag == 0x00081140]
        if existing:
            e = existing[0]
            data[e.start : e.end] = block
        else:
            later = [e.start for e in top if e.tag > 0x00081140 and e.tag >> 16 != 0xFFFE]
            at = min(later) if later else len(data)
            data[at:at] = block
        return f"nest({depth}{', UN' if as_un else ''})"

    def splice(self, seed: Seed, data: bytearray) -> str:
        other = self.rng.choice(self.seeds).plain
        if not other or not data:
            return self.bit_flips(seed, data)
        size = self.rng.randrange(1, min(4096, len(other)) + 1)
        start = self.rng.randrange(len(other) - size + 1)
        at = self.rng.randrange(len(data))
        data[at : at + self.rng.randrange(0, size + 1)] = other[start : start + size]
        return "splice"

    def mutate(self, seed: Seed, data: bytearray) -> list[str]:
        operations = (self.bit_flips, self.value_flips, self.truncate, self.length_field,
                      self.vr, self.nest, self.splice)
        done = [self.rng.choice(operations)(seed, data)]
        if self.rng.random() < 0.3:
            done.append(self.rng.choice(operations)(seed, data))
        return done


def make_mutants(count: int, folder: Path, rng: random.Random) -> list[Mutant]:
    all_seeds = load_seeds()
    mutator = Mutator(all_seeds, rng)
    mutants = []
    for n in range(count):
        seed = all_seeds[n % len(all_seeds)] if n < len(all_seeds) else rng.choice(all_seeds)
        meta, plain, uid = with_uid(seed, n)
        operations = mutator.mutate(seed, plain)
        sent = bytes(plain)
        if seed.transfer_syntax == DEFLATED:
            if rng.random() < 0.8:  # mutate the data set, or (else) the deflated stream
                compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
                sent = compressor.compress(sent) + compressor.flush()
            else:
                compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
                stream = bytearray(compressor.compress(bytes(with_uid(seed, n)[1]))
                                   + compressor.flush())
                operations = [mutator.bit_flips(seed, stream) + " (deflated stream)"]
                sent = bytes(stream)
        path = folder / f"mutant-{n:04d}.dcm"
        path.write_bytes(meta + sent)
        mutants.append(Mutant(n, seed.name, operations, uid, path, sent,
                              hashlib.sha256(sent).hexdigest()))
    return mutants


# --- the service ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _database_url(server: str, name: str) -> str:
    return urlunsplit(urlsplit(server)._replace(path="/" + name))


async def _execute(server: str, sql: str) -> None:
    connection = await asyncpg.connect(_database_url(server, "postgres"))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _nodelay(event: evt.Event) -> None:
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Sender:
    def __init__(self, port: int, mutants: list[Mutant]) -> None:
        # Send each file's data set as it is, never decoded and encoded again by pydicom.
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
        self.port = port
        self.ae = AE(ae_title="FUZZSCU")
        self.ae.acse_timeout = 30
        self.ae.dimse_timeout = 120
        self.ae.network_timeout = 120
        contexts = sorted({(self._context(m.path)) for m in mutants})
        for abstract, syntax in contexts:
            self.ae.add_requested_context(abstract, syntax)
        self.ae.add_requested_context(Verification)
        self.assoc: Association | None = None
        self.associations = 0

    @staticmethod
    def _context(path: Path) -> tuple[str, str]:
        meta = meta_values(path.read_bytes())
        return meta[0x00020002], meta[0x00020010]

    def _association(self) -> Association:
        if self.assoc is None or not self.assoc.is_established:
            self.assoc = self.ae.associate("127.0.0.1", self.port, ae_title=AE_TITLE,
                                           evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
            self.associations += 1
        return self.assoc

    def store(self, path: Path) -> str:
        try:
            assoc = self._association()
            if not assoc.is_established:
                return "no-association"
            status = assoc.send_c_store(path)
        except Exception as exc:
            return f"not-sent:{exc.__class__.__name__}"
        if status is None or "Status" not in status:
            return "no-response"
        return f"{int(status.Status):04X}"

    def echo(self) -> bool:
        try:
            assoc = self._association()
            status = assoc.send_c_echo() if assoc.is_established else None
        except Exception:
            return False
        return status is not None and "Status" in status and int(status.Status) == 0

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()


def _retry(status: str) -> bool:
    return status in ("A700", "no-response", "no-association") or status.startswith("not-sent")


async def _tables(url: str) -> dict[str, list[asyncpg.Record]]:
    connection = await asyncpg.connect(url)
    try:
        return {
            "instance": await connection.fetch(
                "SELECT original_sop_instance_uid FROM instance"),
            "quarantined": await connection.fetch(
                "SELECT key, stage, reason_code, reason FROM quarantined_object"),
            "received": await connection.fetch("SELECT key FROM received_object"),
        }
    finally:
        await connection.close()


def _stored(folder: Path) -> dict[str, list[str]]:
    """sha256 of the data set (after the file meta) -> keys, for the objects of a bucket."""
    found: dict[str, list[str]] = {}
    if folder.is_dir():
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                end = meta_end(data)
                digest = hashlib.sha256(data[end:] if end >= 0 else data).hexdigest()
                found.setdefault(digest, []).append(path.relative_to(folder).as_posix())
    return found


def _status(url: str, data_dir: Path) -> dict[str, int]:
    environment = dict(os.environ, DATABASE_URL=url)
    completed = subprocess.run([str(ANON), "status", "--data-dir", str(data_dir), "--json"],
                               env=environment, capture_output=True, text=True, check=True)
    return dict(json.loads(completed.stdout))


async def _open_receipts(url: str) -> int:
    """Received objects (each mutant has its own SOP Instance UID, so one row each) with
    neither an instance nor a quarantine record of the worker yet."""
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval(
            "SELECT (SELECT count(*) FROM received_object)"
            " - (SELECT count(*) FROM instance)"
            " - (SELECT count(*) FROM quarantined_object WHERE stage <> 'ingest')"))
    finally:
        await connection.close()


def _settle(url: str, data_dir: Path, timeout: float) -> dict[str, int]:
    """Wait until every received object has an outcome (or ``timeout``: a message being
    retried or dead-lettered never gets one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and asyncio.run(_open_receipts(url)) > 0:
        time.sleep(2)
    time.sleep(2)  # let the last records land
    return _status(url, data_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz.serve_mutated", description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--seed", type=int, default=1, help="of the random mutations")
    parser.add_argument("--settle", type=float, default=180.0,
                        help="seconds to wait for the last objects' outcomes")
    parser.add_argument("--keep", action="store_true", help="keep the data folder and database")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="serve-fuzz-"))
    data_dir, files = work / "data", work / "mutants"
    files.mkdir(parents=True)
    database = f"serve_fuzz_{uuid.uuid4().hex[:10]}"
    url = _database_url(args.server, database)
    asyncio.run(_execute(args.server, f'CREATE DATABASE "{database}"'))
    mutants = make_mutants(args.count, files, random.Random(args.seed))
    print(f"{len(mutants)} mutants of {len({m.seed for m in mutants})} seeds in {files}",
          flush=True)

    port, health = free_port(), free_port()
    environment = dict(os.environ, DATABASE_URL=url, LOG_LEVEL="WARNING")
    environment.pop("AMQP_URL", None)
    environment.pop("S3_ENDPOINT", None)
    log_path = work / "serve.log"
    with log_path.open("w") as log:
        service = subprocess.Popen(
            [str(ANON), "serve", "--data-dir", str(data_dir), "--port", str(port),
             "--health-port", str(health)],
            env=environment, stdout=log, stderr=subprocess.STDOUT)
    report: dict[str, object] = {}
    failed = False
    try:
        sender = Sender(port, mutants)
        for _ in range(120):
            if service.poll() is not None:
                raise RuntimeError(f"anon serve exited ({service.returncode}); see {log_path}")
            if sender.echo():
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"anon serve does not answer C-ECHO; see {log_path}")
        started = time.monotonic()
        echoes: list[bool] = []
        for mutant in mutants:
            mutant.statuses.append(sender.store(mutant.path))
            if (mutant.index + 1) % 100 == 0:
                echoes.append(sender.echo())
                print(f"  {mutant.index + 1} sent; echo {'ok' if echoes[-1] else 'FAILED'}",
                      flush=True)
        for _ in range(2):
            for mutant in mutants:
                if _retry(mutant.statuses[-1]):
                    time.sleep(0.2)
                    mutant.statuses.append(sender.store(mutant.path))
        echoes.append(sender.echo())
        sender.close()
        send_seconds = time.monotonic() - started
        counts = _settle(url, data_dir, timeout=args.settle)
        alive = service.poll() is None
        tables = asyncio.run(_tables(url))

        instances = {r["original_sop_instance_uid"] for r in tables["instance"]}
        quarantine_rows = {r["key"]: r for r in tables["quarantined"]}
        in_quarantine = _stored(data_dir / "objects" / "quarantine")
        in_incoming = _stored(data_dir / "objects" / "incoming")
        outcomes: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        unaccounted = []
        for mutant in mutants:
            uids = {mutant.uid}
            try:
                obj = parse(mutant.path.read_bytes())
                uids.add(obj.get_text(0x00080018) or "")
            except Exception:
                pass
            deidentified = bool(uids & instances)
            keys = in_quarantine.get(mutant.digest, [])
            rows = [quarantine_rows[k] for k in keys if k in quarantine_rows]
            if deidentified and rows:
                mutant.outcome = "de-identified and quarantined"
            elif deidentified:
                mutant.outcome = "de-identified"
            elif rows:
                row = rows[0]
                has_reason = bool(str(row["reason"]).strip())
                mutant.outcome = f"quarantined at {row['stage']}" + (
                    "" if has_reason else " WITHOUT A REASON")
                reasons[f"{row['stage']}: {row['reason_code']}"] += 1
            elif keys:
                mutant.outcome = "in quarantine without a quarantined_object row"
            elif mutant.digest in in_incoming:
                mutant.outcome = "received, no outcome (being retried or dead-lettered)"
            elif mutant.statuses[-1] == "A700" or _retry(mutant.statuses[-1]):
                mutant.outcome = "not taken (sender told to retry)"
            else:
                mutant.outcome = "unaccounted"
            outcomes[mutant.outcome] += 1
            accounted = mutant.outcome == "de-identified" or (
                mutant.outcome.startswith("quarantined at") and "WITHOUT" not in mutant.outcome)
            if not accounted:
                unaccounted.append({"file": mutant.path.name, "seed": mutant.seed,
                                    "operations": mutant.operations,
                                    "statuses": mutant.statuses, "outcome": mutant.outcome})

        leaks, kept = [], 0
        for path in (data_dir / "objects" / "deidentified").rglob("*.dcm"):
            data = path.read_bytes()
            if not any(value in data for value in PLANTED):
                continue
            problem = leak(RULES, data, PLANTED, set())
            if problem:
                leaks.append(f"{path.relative_to(data_dir).as_posix()}: {problem}")
            else:
                kept += 1

        log_lines = log_path.read_text(errors="replace").splitlines()
        problems: Counter[str] = Counter()
        for line in log_lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("warning", "error", "critical"):
                # Message ids and counts differ per line; the kind of message is what counts.
                text = re.sub(r"\b[0-9a-f]{16,}\b|\d+", "#", str(entry.get("message", "")))
                problems[f"{entry['level']}: {text}"] += 1

        first = Counter(m.statuses[0] for m in mutants)
        final = Counter(m.statuses[-1] for m in mutants)
        report = {
            "files": len(mutants),
            "seeds": len({m.seed for m in mutants}),
            "operations": dict(Counter(op.split("(")[0] for m in mutants
                                       for op in m.operations)),
            "send_seconds": round(send_seconds, 1),
            "associations": sender.associations,
            "echoes": {"ok": sum(echoes), "failed": len(echoes) - sum(echoes)},
            "service_alive_at_end": alive,
            "first_status": dict(first),
            "final_status": dict(final),
            "outcomes": dict(outcomes),
            "quarantine_reasons": dict(reasons),
            "anon_status": counts,
            "tables": {"instance": len(tables["instance"]),
                       "quarantined_object": len(tables["quarantined"]),
                       "received_object": len(tables["received"])},
            "service_log_warnings_and_errors": dict(problems),
            "outputs_with_planted_name_or_id_in_kept_attributes": kept,
            "outputs_leaking_planted_name_or_id": leaks,
            "not_deidentified_nor_quarantined": unaccounted,
        }
        failed = bool(unaccounted) or bool(leaks) or not all(echoes) or not alive
    finally:
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(timeout=60)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
        if not args.keep:
            asyncio.run(_execute(args.server, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work} and database {database}")
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
