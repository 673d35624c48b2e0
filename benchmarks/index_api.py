"""Speed of the pseudonym lookup through the index API, with one million patients.

    python -m benchmarks.index_api [--patients 1000000] [--lookups 20000] [--repeat 3]
                                   [--concurrency auto] [--database-url URL] [--fresh]
                                   [--json FILE]

The index: a database of its own (``--database-url``, default ``anon_bench_index_api`` on
the server of ``BENCH_DATABASE_URL``, else the local PostgreSQL) with the schema of the
migrations, the site, ``--patients`` patients and two studies each, written in SQL with
values shaped like the real ones. It is kept for the next run when it already holds that
many patients (populating is not measured); ``--fresh`` writes it again.

Per run (``--repeat``, figures are medians of the runs):

- ``anon token create --role phi-reader`` makes the run's token; ``anon serve`` starts as a
  subprocess on that database, with a new data folder and free ports for its Storage SCP
  and its API, and with the rate limit of original-value reads raised out of the way
  (``API_PHI_READS_PER_MINUTE`` and ``API_PHI_BURST`` at 10^9);
- **start to first lookup**: from starting ``anon serve`` to the first lookup answered 200
  (the benchmark asks every 10 ms, on a new connection each time);
- **cold**: the first lookups right after that, one at a time on one keep-alive
  connection (the server's pool and statement caches are new; the database's pages are
  in the operating system's cache from earlier runs);
- after a warm-up, **sequential**: one client, one lookup at a time; and **concurrent**:
  ``--lookups`` lookups from this process (the server is the other) over keep-alive
  connections, at the concurrency chosen by a sweep in the first run (the highest
  throughput whose median and 99th percentile stay within the target), or the one given,
  with the CPU each lookup cost the server, its PostgreSQL backends and this process;
- every lookup is of a random existing pseudonym and must be answered 200 with that
  pseudonym (else it counts as an error); after the server stops, the audit trail must
  hold one ``patient.phi`` record of the run's token per lookup.

And, without HTTP, the **inner loop**: the lookup's statement (``read_patient_audited``: the
read and its audit record) in a loop on one asyncpg connection, the same as a transaction of
``read_patient`` and the audit insert, and the token check of every request, to show what
HTTP and the token add.

The target: median under 5 ms, 99th percentile under 20 ms, at least 1,000 lookups/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import uvloop

from benchmarks import scale
from shared.index import audit, tokens
from shared.index.lookup import read_patient, read_patient_audited
from shared.index.migrations import migrate

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE = "anon_bench_index_api" + ("_smoke" if scale.SMOKE else "")
SITE_ID = "654321"
ANON = Path(sys.executable).with_name("anon")
UNLIMITED = str(10**9)
TARGET = {"median_ms": 5.0, "p99_ms": 20.0, "per_second": 1000.0}
SWEEP = (1, 2, 4, 8, 16, 32)
COLD_LOOKUPS = 200


# --- the index -----------------------------------------------------------------------------


def database_url(given: str | None) -> str:
    if given:
        return given
    server = os.environ.get("BENCH_DATABASE_URL", LOCAL_SERVER)
    return urlunsplit(urlsplit(server)._replace(path="/" + DATABASE))


async def _admin(url: str, sql: str) -> None:
    server = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    connection = await asyncpg.connect(server)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


# Names as DICOM PN, LAST^FIRST; 40 x 32 combinations.
LAST = (
    "SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS",
    "RODRIGUEZ", "MARTINEZ", "HERNANDEZ", "LOPEZ", "GONZALEZ", "WILSON", "ANDERSON",
    "THOMAS", "TAYLOR", "MOORE", "JACKSON", "MARTIN", "LEE", "PEREZ", "THOMPSON", "WHITE",
    "HARRIS", "SANCHEZ", "CLARK", "RAMIREZ", "LEWIS", "ROBINSON", "WALKER", "YOUNG",
    "ALLEN", "KING", "WRIGHT", "SCOTT", "TORRES", "NGUYEN", "HILL", "FLORES",
)
FIRST = (
    "JAMES", "MARY", "ROBERT", "PATRICIA", "JOHN", "JENNIFER", "MICHAEL", "LINDA", "DAVID",
    "ELIZABETH", "WILLIAM", "BARBARA", "RICHARD", "SUSAN", "JOSEPH", "JESSICA", "THOMAS",
    "SARAH", "CHARLES", "KAREN", "CHRISTOPHER", "LISA", "DANIEL", "NANCY", "MATTHEW",
    "BETTY", "ANTHONY", "MARGARET", "MARK", "SANDRA", "DONALD", "ASHLEY",
)


def _array(words: tuple[str, ...]) -> str:
    return "ARRAY[" + ",".join(f"'{w}'" for w in words) + "]"


# Patient g: original ID MRN + 8 digits (a permutation of g, so unique), an issuer for one
# in ten, a name, the pseudonym SITEID-000001 (as many digits as needed past 999999) which
# is also the pseudonymous name, a date offset in 1..3650, first seen over three years.
PATIENTS = f"""
INSERT INTO patient (id, original_patient_id, original_issuer, original_patient_name,
                     pseudo_patient_id, pseudo_patient_name, date_offset_days, created_at)
SELECT g, 'MRN' || lpad(((g * 7919) % 100000000)::text, 8, '0'),
       CASE WHEN g % 10 = 0 THEN 'HOSPITAL-B' ELSE '' END,
       ({_array(LAST)})[1 + g % 40] || '^' || ({_array(FIRST)})[1 + (g / 40) % 32],
       pseudo, pseudo, 1 + (g * 2654435761) % 3650,
       now() - make_interval(secs => ((g * 40503) % 94608000)::double precision)
FROM generate_series(1, $1::bigint) AS g,
     LATERAL (SELECT $2 || '-' || lpad(g::text, greatest(6, length(g::text)), '0')) AS p(pseudo)
"""

# Two studies per patient: original UIDs of a scanner's root, pseudonymous ones under 2.25
# (a bijection of the study's number modulo 10^38, so unique and random-looking),
# study dates from 2005 on, shifted back by the patient's offset; accession numbers and
# their 16-digit pseudonyms.
STUDIES = """
INSERT INTO study (patient, original_study_uid, pseudo_study_uid, original_study_date,
                   pseudo_study_date, original_accession, pseudo_accession, created_at)
SELECT p.id, '1.2.840.113619.2.55.3.' || (2 * p.id + k) || '.' || (1000 + p.id % 9000),
       '2.25.' || (2 * p.id + k)::numeric * 73928514062837461950284736192837465019 % 1e38::numeric,
       to_char(d, 'YYYYMMDD'), to_char(d - p.date_offset_days, 'YYYYMMDD'),
       'A' || lpad(((2 * p.id + k) * 104723 % 1000000000)::text, 9, '0'),
       lpad(((2 * p.id + k)::numeric * 2862933555777941757 % 10000000000000000)::text, 16, '0'),
       p.created_at + make_interval(days => k)
FROM patient AS p, generate_series(0, 1) AS k,
     LATERAL (SELECT date '2005-01-01' + ((p.id * 31 + k * 977) % 7300)::integer) AS s(d)
ORDER BY p.id, k
"""

COUNTER = """
INSERT INTO integer_key_type (key_type, last_value) VALUES ('patient', $1)
ON CONFLICT (key_type) DO UPDATE SET last_value = excluded.last_value;
INSERT INTO integer_value (key_type, key_value, value)
SELECT 'patient', CASE WHEN original_issuer = '' THEN original_patient_id
                       ELSE original_patient_id || '\\' || original_issuer END, id
FROM patient
"""


async def _counts(connection: asyncpg.Connection) -> tuple[int, int, bool]:
    row = await connection.fetchrow(
        "SELECT (SELECT count(*) FROM patient) AS patients,"
        " (SELECT count(*) FROM study) AS studies,"
        " EXISTS (SELECT 1 FROM site WHERE site_id = $1) AS site", SITE_ID)
    assert row is not None
    return int(row["patients"]), int(row["studies"]), bool(row["site"])


async def populate(url: str, patients: int, fresh: bool) -> None:
    """The index of ``patients`` patients and twice as many studies (kept if it is one)."""
    name = _name(url)
    if fresh:
        await _admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    try:
        connection = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        await _admin(url, f'CREATE DATABASE "{name}"')
        connection = await asyncpg.connect(url)
    try:
        await migrate(connection)
        counts = await _counts(connection)
    finally:
        await connection.close()
    if counts == (patients, 2 * patients, True):
        print(f"index: {patients:,} patients and {2 * patients:,} studies kept from a "
              f"previous run in {name} (--fresh writes them again)")
        return
    if counts != (0, 0, False):  # another size: start again
        await _admin(url, f'DROP DATABASE "{name}" WITH (FORCE)')
        await _admin(url, f'CREATE DATABASE "{name}"')
    started = time.perf_counter()
    connection = await asyncpg.connect(url)
    try:
        await migrate(connection)
        await connection.execute("SET synchronous_commit = off")
        await connection.execute("SET maintenance_work_mem = '256MB'")
        async with connection.transaction():
            await connection.execute("INSERT INTO site (site_id, secret) VALUES ($1, $2)",
                                     SITE_ID, secrets.token_bytes(32))
            await connection.execute(PATIENTS, patients, SITE_ID)
            await connection.execute("SELECT setval('patient_id_seq', $1)", patients)
            await connection.execute(STUDIES)
            await connection.execute(COUNTER.replace("$1", str(patients)))
        await connection.execute("VACUUM ANALYZE patient, study, integer_value")
        counts = await _counts(connection)
    finally:
        await connection.close()
    if counts != (patients, 2 * patients, True):
        raise RuntimeError(f"the index holds {counts[0]} patients and {counts[1]} studies")
    print(f"index: {patients:,} patients and {2 * patients:,} studies written in "
          f"{time.perf_counter() - started:.1f} s (not measured)")


def pseudonym(number: int) -> str:
    return f"{SITE_ID}-{number:06d}"


# --- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def anon_command() -> list[str]:
    return [str(ANON)] if ANON.exists() else [sys.executable, "-m", "services.cli"]


def environment(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AMQP_URL", "S3_ENDPOINT", "SITE_ID", "DATA_DIR")}
    env.update({"DATABASE_URL": url, "LOG_LEVEL": "WARNING",
                "API_PHI_READS_PER_MINUTE": UNLIMITED, "API_PHI_BURST": UNLIMITED})
    return env


def create_token(env: dict[str, str], name: str, cwd: Path) -> str:
    done = subprocess.run([*anon_command(), "token", "create", "--role", "phi-reader",
                           "--name", name], env=env, cwd=cwd, capture_output=True, text=True,
                          check=True)
    return done.stdout.strip().splitlines()[-1]


def revoke_token(env: dict[str, str], name: str, cwd: Path) -> None:
    subprocess.run([*anon_command(), "token", "revoke", name], env=env, cwd=cwd,
                   capture_output=True, check=True)


@contextmanager
def serve(scratch: Path, env: dict[str, str]) -> Iterator[tuple[int, float, int]]:
    """``anon serve`` on free ports; its API port, the time it was started and its pid."""
    api_port = free_port()
    data = scratch / f"serve-{uuid.uuid4().hex[:6]}"
    log = (scratch / f"{data.name}.log").open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(
        [*anon_command(), "serve", "--data-dir", str(data), "--port", str(free_port()),
         "--aet", "ANONSCP", "--health-port", str(api_port)],
        env=env, cwd=scratch, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield api_port, started, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        if process.returncode not in (0, -15):
            tail = (scratch / f"{data.name}.log").read_text(errors="replace")[-2000:]
            print(f"anon serve exited with {process.returncode}:\n{tail}", file=sys.stderr)


# --- the clients ---------------------------------------------------------------------------


@dataclass
class Sample:
    latencies: list[float]  # seconds, in the order answered
    seconds: float          # wall clock of the whole sample
    errors: int

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds

    def figures(self) -> dict[str, float]:
        return {"median_ms": 1000 * statistics.median(self.latencies),
                "p99_ms": 1000 * percentile(self.latencies, 99),
                "max_ms": 1000 * max(self.latencies), "per_second": self.per_second,
                "errors": self.errors, "lookups": len(self.latencies)}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


class Lookups:
    """Lookups of random existing pseudonyms on one API, each checked."""

    def __init__(self, port: int, token: str, patients: int, seed: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1/patients/"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.patients = patients
        self.random = random.Random(seed)
        self.done = 0  # lookups answered 200 with the right pseudonym (audited)

    async def one(self, session: aiohttp.ClientSession) -> bool:
        wanted = pseudonym(self.random.randint(1, self.patients))
        async with session.get(self.base + wanted + "/original",
                               headers=self.headers) as response:
            body = await response.read()
        if response.status != 200:
            return False
        if json.loads(body).get("pseudo_patient_id") != wanted:
            return False
        self.done += 1
        return True

    async def first(self, started: float, timeout: float = 120) -> float:
        """Seconds from ``started`` to the first lookup answered 200 (new connections)."""
        deadline = started + timeout
        while True:
            try:
                async with aiohttp.ClientSession(
                        timeout=aiohttp.ClientTimeout(total=5)) as session:
                    if await self.one(session):
                        return time.perf_counter() - started
            except (TimeoutError, aiohttp.ClientError):
                pass
            if time.perf_counter() > deadline:
                raise RuntimeError("anon serve answered no lookup")
            await asyncio.sleep(0.01)

    async def run(self, count: int, concurrency: int) -> Sample:
        """``count`` lookups from ``concurrency`` clients at once, keep-alive connections."""
        latencies: list[float] = []
        errors = 0
        remaining = count
        connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def client() -> None:
                nonlocal remaining, errors
                while remaining > 0:
                    remaining -= 1
                    begun = time.perf_counter()
                    try:
                        ok = await self.one(session)
                    except aiohttp.ClientError:
                        ok = False
                    latencies.append(time.perf_counter() - begun)
                    errors += not ok

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            seconds = time.perf_counter() - started
        return Sample(latencies, seconds, errors)


def within_target(figures: dict[str, float]) -> bool:
    return (figures["median_ms"] < TARGET["median_ms"] and figures["p99_ms"] < TARGET["p99_ms"]
            and figures["errors"] == 0)


async def sweep(lookups: Lookups, count: int) -> tuple[int, list[dict[str, float]]]:
    """The concurrency of the highest throughput within the latency target (of all, when
    none is within it), and the figures of each."""
    rows = []
    for concurrency in SWEEP:
        figures = {"concurrency": concurrency, **(await lookups.run(count, concurrency)).figures()}
        rows.append(figures)
        print(f"  sweep: concurrency {concurrency:>2}: {_line(figures)}")
    # None within the target: the highest throughput, to show how far off it is.
    best = max([r for r in rows if within_target(r)] or rows, key=lambda r: r["per_second"])
    return int(best["concurrency"]), rows


def _line(figures: dict[str, float]) -> str:
    return (f"median {figures['median_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms, "
            f"{figures['per_second']:,.0f} lookups/s, {figures['errors']:.0f} errors")


TICKS = os.sysconf("SC_CLK_TCK")


def _process_seconds(pid: int) -> float:
    """User and system CPU seconds of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


async def cpu_seconds(url: str, server: int) -> dict[str, Any]:
    """CPU seconds used so far by the server, by each PostgreSQL backend of the benchmark's
    database (the server's connections; a local server only) and by this process."""
    connection = await asyncpg.connect(url)
    try:
        backends = [r["pid"] for r in await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()")]
    finally:
        await connection.close()
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {"server": _process_seconds(server),
            "postgres": {pid: _process_seconds(pid) for pid in backends},
            "client": own.ru_utime + own.ru_stime}


def cpu_per_lookup(before: dict[str, Any], after: dict[str, Any], lookups: int
                   ) -> dict[str, float]:
    """Milliseconds of CPU per lookup between two :func:`cpu_seconds`; a backend that
    started in between counts whole, one that ended is not counted."""
    postgres = sum(seconds - before["postgres"].get(pid, 0.0)
                   for pid, seconds in after["postgres"].items() if seconds)
    used = {"server": after["server"] - before["server"], "postgres": postgres,
            "client": after["client"] - before["client"]}
    return {part: 1000 * seconds / lookups for part, seconds in used.items()}


async def audited_lookups(url: str, actor: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval(
            "SELECT count(*) FROM audit_event WHERE actor = $1 AND action = 'patient.phi'"
            " AND outcome = 'ok' AND status = 200", actor))
    finally:
        await connection.close()


async def inner_loops(url: str, token: str, patients: int, count: int, seed: int
                      ) -> dict[str, Sample]:
    """Without HTTP, in a loop: the API's statement of a lookup (``read_patient_audited``:
    the read and its audit record) on one connection; the same as a transaction of
    ``read_patient`` and the audit insert (as ``anon lookup`` does it); and the token check
    of every request (``tokens.authenticate`` on a pool, as the API runs it)."""
    connection = await asyncpg.connect(url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    choose = random.Random(seed)
    samples: dict[str, Sample] = {}

    async def statement() -> None:
        wanted = pseudonym(choose.randint(1, patients))
        record = audit.fields("bench-inner-loop", "phi-reader", "127.0.0.1", "patient.phi",
                              wanted)
        found = await read_patient_audited(connection, wanted, record)
        if found is None or found.pseudo_patient_id != wanted:
            raise RuntimeError("the inner loop found no patient")

    async def transaction() -> None:
        wanted = pseudonym(choose.randint(1, patients))
        async with connection.transaction():
            found = await read_patient(connection, wanted)
            await connection.execute(audit.INSERT, *audit.values(
                "bench-inner-loop", "phi-reader", "127.0.0.1", "patient.phi", wanted,
                audit.OK, 200, None))
        if found is None or found.pseudo_patient_id != wanted:
            raise RuntimeError("the inner loop found no patient")

    async def token_check() -> None:
        if await tokens.authenticate(pool, token) is None:
            raise RuntimeError("the token was refused")

    try:
        for name, step in (("inner_loop", statement), ("inner_loop_transaction", transaction),
                           ("token_check", token_check)):
            for _ in range(count // 10):  # warm-up
                await step()
            latencies = []
            started = time.perf_counter()
            for _ in range(count):
                begun = time.perf_counter()
                await step()
                latencies.append(time.perf_counter() - begun)
            samples[name] = Sample(latencies, time.perf_counter() - started, 0)
    finally:
        await pool.close()
        await connection.close()
    return samples


# --- a run ---------------------------------------------------------------------------------


@dataclass
class Settings:
    url: str
    patients: int
    lookups: int
    concurrency: int | None
    scratch: Path


async def one_run(settings: Settings, number: int) -> dict[str, Any]:
    load = os.getloadavg()[0]
    env = environment(settings.url)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    token = create_token(env, name, settings.scratch)
    lookups = Lookups(0, token, settings.patients, seed=number)
    result: dict[str, Any] = {}
    try:
        with serve(settings.scratch, env) as (port, started, pid):
            lookups.base = f"http://127.0.0.1:{port}/api/v1/patients/"
            result["start_to_first_lookup_s"] = await lookups.first(started)
            cold = await lookups.run(min(COLD_LOOKUPS, settings.lookups), 1)
            result["cold"] = {**cold.figures(), "first_ms": 1000 * cold.latencies[0]}
            warm_up = max(100, settings.lookups // 10)
            await lookups.run(warm_up, 8)
            result["sequential"] = (await lookups.run(max(100, settings.lookups // 10),
                                                      1)).figures()
            concurrency = settings.concurrency
            if concurrency is None:
                concurrency, result["sweep"] = await sweep(
                    lookups, max(200, settings.lookups // 4))
            before = await cpu_seconds(settings.url, pid)
            sample = await lookups.run(settings.lookups, concurrency)
            after = await cpu_seconds(settings.url, pid)
            result["concurrent"] = {"concurrency": concurrency, **sample.figures()}
            result["cpu_ms_per_lookup"] = cpu_per_lookup(before, after, settings.lookups)
        audited = await audited_lookups(settings.url, name)
        result["audit"] = {"lookups": lookups.done, "records": audited,
                           "one_per_lookup": audited == lookups.done}
        loops = await inner_loops(settings.url, token, settings.patients,
                                  max(100, settings.lookups // 4), number)
        result.update({name: sample.figures() for name, sample in loops.items()})
    finally:
        revoke_token(env, name, settings.scratch)
    result["load"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    print(f"run {number}: start to first lookup {result['start_to_first_lookup_s']:.2f} s; "
          f"cold: first {result['cold']['first_ms']:.1f} ms, {_line(result['cold'])}")
    print(f"  sequential: {_line(result['sequential'])}")
    print(f"  concurrency {result['concurrent']['concurrency']}: {_line(result['concurrent'])}")
    print("  CPU per lookup: " + ", ".join(
        f"{part} {ms:.2f} ms" for part, ms in result["cpu_ms_per_lookup"].items()))
    print(f"  inner loop (the API's statement, one connection): {_line(result['inner_loop'])}")
    print(f"  inner loop, as a transaction of read_patient and the audit insert: "
          f"{_line(result['inner_loop_transaction'])}")
    print(f"  token check (tokens.authenticate on a pool): {_line(result['token_check'])}")
    print(f"  audit: {audited:,} records for {lookups.done:,} lookups; load average "
          f"{result['load'][0]} at start, {result['load'][1]} at end")
    return result


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"start_to_first_lookup_s": statistics.median(
        r["start_to_first_lookup_s"] for r in runs)}
    for part in ("cold", "sequential", "concurrent", "cpu_ms_per_lookup", "inner_loop",
                 "inner_loop_transaction", "token_check"):
        summary[part] = {key: statistics.median(r[part][key] for r in runs)
                         for key in runs[0][part]}
    summary["errors"] = sum(r[p]["errors"] for r in runs for p in ("cold", "sequential",
                                                                  "concurrent"))
    summary["audit_one_per_lookup"] = all(r["audit"]["one_per_lookup"] for r in runs)
    summary["load"] = [r["load"] for r in runs]
    best = summary["concurrent"]
    summary["target"] = {
        "median": best["median_ms"] < TARGET["median_ms"],
        "p99": best["p99_ms"] < TARGET["p99_ms"],
        "per_second": best["per_second"] >= TARGET["per_second"],
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=scale.size(1_000_000, 2_000))
    parser.add_argument("--lookups", type=int, default=scale.size(20_000, 500),
                        help="lookups of the concurrent measurement, per run")
    parser.add_argument("--repeat", type=int, default=scale.size(3, 1))
    parser.add_argument("--concurrency", default="auto",
                        help="clients at once; auto: the sweep of the first run chooses")
    parser.add_argument("--database-url", help=f"the benchmark's database (default "
                        f"{DATABASE} on BENCH_DATABASE_URL's server, else the local one)")
    parser.add_argument("--fresh", action="store_true", help="write the index again")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    url = database_url(args.database_url)
    asyncio.run(populate(url, args.patients, args.fresh))
    scratch = Path(tempfile.mkdtemp(prefix="bench-index-api-", dir="/tmp"))
    settings = Settings(url, args.patients, args.lookups,
                        None if args.concurrency == "auto" else int(args.concurrency), scratch)
    runs = []
    try:
        for number in range(1, args.repeat + 1):
            # The client runs on uvloop too: less of the two cores goes to the load generator.
            runs.append(uvloop.run(one_run(settings, number)))
            if settings.concurrency is None:  # the first run's sweep chose it
                settings.concurrency = int(runs[0]["concurrent"]["concurrency"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = medians(runs)
    best = summary["concurrent"]
    print(f"median of {len(runs)} runs, {args.patients:,} patients: "
          f"concurrency {best['concurrency']:.0f}: {_line(best)}; sequential "
          f"{_line(summary['sequential'])}; cold {_line(summary['cold'])}; start to first "
          f"lookup {summary['start_to_first_lookup_s']:.2f} s; inner loop "
          f"{_line(summary['inner_loop'])}; token check {_line(summary['token_check'])}")
    print("target: " + ", ".join(f"{k} {'met' if v else 'NOT met'}"
                                 for k, v in summary["target"].items())
          + f"; audit one record per lookup: {summary['audit_one_per_lookup']}")
    results = {"patients": args.patients, "summary": summary, "runs": runs}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if summary["errors"] == 0 and summary["audit_one_per_lookup"] else 1


if __name__ == "__main__":
    sys.exit(main())
