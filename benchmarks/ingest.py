"""Speed of the Storage SCP as a sender sees it, against DCMTK's storescp in the same run.

    python -m benchmarks.ingest [--corpus benchmarks/corpus] [--repeat 3]
                                [--small 1000] [--large 200]

Every figure is the wall clock of DCMTK's ``storescu`` (with ``TCP_NODELAY=1``, as for
storescp) sending a folder: from its start to its exit, so the association, every
C-STORE and the release. Receivers, started before the clock and timed in turns within
each round (median of ``--repeat`` rounds):

- **storescp**: ``/usr/bin/storescp -od DIR`` writing each object to disk (no fsync);
  ``storescp --fork`` (a process per association) for the four-association case.
- **pynetdicom do-nothing**: a pynetdicom 3 Storage SCP whose handler answers Success
  and keeps nothing (TCP_NODELAY on): the floor of any SCP built on that library.
- **scp-ingest deployed**: ``python -m services.scp_ingest`` with PostgreSQL, RabbitMQ
  and the S3 server (moto's, started here, or ``BENCH_S3_ENDPOINT``): each object
  fsynced in the journal before its Success, relayed to S3 and the broker meanwhile.
  ``SCP_PROCESSES=2`` for the four-association case.
- **anon serve**: the whole system on embedded defaults (a new data folder: local
  object store, in-process queues, the embedded PostgreSQL), its workers de-identifying
  what arrives on the same two cores while the sender sends.

Cases: 1 association of ``--small`` small CT files (64x64, about 10 KB); 4 associations
at once (the same files split in four folders, four storescu processes); 1 association of
``--large`` 512x512 CT files (0.5 MB). After each of our runs the benchmark also waits
for the journal to be relayed and prints how long that took after the sender's exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks import scale
from benchmarks.corpus import CorpusSpec, build_corpus
from benchmarks.pipeline import LOCAL_DB, STORESCP, STORESCU, deployment, free_port

SENDERS = 4
NODELAY = {**os.environ, "TCP_NODELAY": "1"}
DO_NOTHING_SCP = """
import sys
from pynetdicom import AE, AllStoragePresentationContexts, ALL_TRANSFER_SYNTAXES, evt
from shared.dimse.association import set_nodelay
ae = AE(ae_title="NOTHING")
for context in AllStoragePresentationContexts:
    ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
ae.start_server(("127.0.0.1", int(sys.argv[1])), block=True, evt_handlers=[
    (evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_C_STORE, lambda event: 0x0000)])
"""


def send(folders: list[Path], port: int, aet: str) -> float:
    """Seconds for one storescu per folder, all at once, to send everything."""
    started = time.perf_counter()
    senders = [subprocess.Popen([STORESCU, "-aec", aet, "+sd", "+sp", "*.dcm", "127.0.0.1",
                                 str(port), str(folder)], env=NODELAY,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for folder in folders]
    for sender in senders:
        _, errors = sender.communicate(timeout=900)
        if sender.returncode != 0:
            raise RuntimeError(f"storescu failed: {errors.decode(errors='replace')[-500:]}")
    return time.perf_counter() - started


def wait_port(port: int, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def wait_ready(health_port: int, timeout: float = 120,
               process: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    """Until ``/readyz`` answers; a ``process`` that exits first is reported with the end
    of its ``log``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"the SCP exited ({process.returncode}) before it was "
                               f"ready: {tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/readyz", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the SCP did not become ready")


def terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Receiver:
    """One receiver kind: ``start`` gives (port, AE title, stop, journal folder or None)."""

    def __init__(self, name: str,
                 start: Callable[[Path], tuple[int, str, Callable[[], None], Path | None]]
                 ) -> None:
        self.name = name
        self.start = start


def storescp(fork: bool) -> Receiver:
    def start(scratch: Path) -> tuple[int, str, Callable[[], None], Path | None]:
        port = free_port()
        out = scratch / "storescp"
        out.mkdir()
        process = subprocess.Popen([STORESCP, *(["--fork"] if fork else []), "-aet", "STORESCP",
                                    "-od", str(out), str(port)], env=NODELAY,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        return port, "STORESCP", lambda: terminate(process), None

    return Receiver("storescp --fork" if fork else "storescp", start)


def do_nothing() -> Receiver:
    def start(scratch: Path) -> tuple[int, str, Callable[[], None], Path | None]:
        port = free_port()
        process = subprocess.Popen([sys.executable, "-c", DO_NOTHING_SCP, str(port)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)
        return port, "NOTHING", lambda: terminate(process), None

    return Receiver("pynetdicom do-nothing", start)


def deployed(env: dict[str, str], processes: int) -> Receiver:
    def start(scratch: Path) -> tuple[int, str, Callable[[], None], Path | None]:
        port, health = free_port(), free_port()
        journal = scratch / "journal"
        log = scratch / "scp-ingest.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.scp_ingest"],
                env={**env, "SCP_PORT": str(port), "HEALTH_PORT": str(health),
                     "SCP_SPOOL_DIR": str(journal), "SCP_PROCESSES": str(processes)},
                stdout=subprocess.DEVNULL, stderr=output)
        wait_ready(health, process=process, log=log)
        return port, "ANONSCP", lambda: terminate(process), journal

    return Receiver(f"scp-ingest deployed ({processes} process{'es' if processes > 1 else ''})",
                    start)


def embedded(processes: int) -> Receiver:
    def start(scratch: Path) -> tuple[int, str, Callable[[], None], Path | None]:
        port, api = free_port(), free_port()
        data = scratch / "data"
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "AMQP_URL", "S3_ENDPOINT")}
        log = scratch / "anon-serve.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(Path(sys.executable).with_name("anon")), "serve", "--data-dir",
                 str(data)],
                env={**env, "SCP_PORT": str(port), "API_PORT": str(api),
                     "HEALTH_PORT": str(api), "SCP_HOST": "127.0.0.1", "API_HOST": "127.0.0.1",
                     "HEALTH_HOST": "127.0.0.1", "LOG_LEVEL": "WARNING",
                     "SCP_PROCESSES": str(processes)},
                stdout=subprocess.DEVNULL, stderr=output)
        wait_ready(api, timeout=180, process=process, log=log)
        return port, "ANONSCP", lambda: terminate(process), data / "scp-journal"

    return Receiver(f"anon serve ({processes} process{'es' if processes > 1 else ''})", start)


def drained_after(journal: Path, timeout: float = 900) -> float:
    """Seconds until the journal's ready folder is empty (from now)."""
    started = time.perf_counter()
    ready = journal / "ready"
    while ready.exists() and any(ready.iterdir()):
        if time.perf_counter() - started > timeout:
            break
        time.sleep(0.05)
    return time.perf_counter() - started


def split(folder: Path, scratch: Path, parts: int) -> list[Path]:
    """``parts`` folders of links to the files of ``folder``, dealt in turn."""
    folders = [scratch / f"part{index}" for index in range(parts)]
    for part in folders:
        part.mkdir()
    for index, path in enumerate(sorted(folder.glob("*.dcm"))):
        (folders[index % parts] / path.name).symlink_to(path.resolve())
    return folders


@contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """``BENCH_S3_ENDPOINT`` (with ``BENCH_S3_ACCESS_KEY``, ``BENCH_S3_SECRET_KEY``), or
    moto's server started here."""
    if os.environ.get("BENCH_S3_ENDPOINT"):
        yield {"S3_ENDPOINT": os.environ["BENCH_S3_ENDPOINT"],
               "S3_ACCESS_KEY": os.environ.get("BENCH_S3_ACCESS_KEY", ""),
               "S3_SECRET_KEY": os.environ.get("BENCH_S3_SECRET_KEY", "")}
        return
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    moto.start()
    try:
        yield {"S3_ENDPOINT": f"127.0.0.1:{port}", "S3_ACCESS_KEY": "bench",
               "S3_SECRET_KEY": "benchbench"}
    finally:
        moto.stop()


def run_case(receivers: list[Receiver], folders: list[Path], repeat: int
             ) -> dict[str, dict[str, float]]:
    """Median seconds per receiver (and for ours, the relay's drain after the send)."""
    times: dict[str, list[float]] = {receiver.name: [] for receiver in receivers}
    drains: dict[str, list[float]] = {}
    for _ in range(repeat):
        for receiver in receivers:
            scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
            try:
                port, aet, stop, journal = receiver.start(scratch)
                try:
                    times[receiver.name].append(send(folders, port, aet))
                    if journal is not None:
                        drains.setdefault(receiver.name, []).append(drained_after(journal))
                finally:
                    stop()
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    result = {name: {"seconds": statistics.median(values)} for name, values in times.items()}
    for name, values in drains.items():
        result[name]["relayed_after"] = statistics.median(values)
    return result


def report(title: str, figures: dict[str, dict[str, float]], reference: str,
           count: int) -> None:
    print(f"\n{title} ({count} files)")
    base = figures[reference]["seconds"]
    for name, values in figures.items():
        seconds = values["seconds"]
        line = (f"  {name:34s} {seconds:7.2f} s  {count / seconds:8.0f} files/s  "
                f"x {reference}: {base / seconds:5.2f}")
        if "relayed_after" in values:
            line += f"  (journal relayed {values['relayed_after']:.1f} s after the send)"
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=scale.corpus("benchmarks/corpus"))
    parser.add_argument("--repeat", type=int, default=scale.size(3, 1))
    parser.add_argument("--small", type=int, default=scale.size(1000, 40))
    parser.add_argument("--large", type=int, default=scale.size(200, 8))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    small = build_corpus(args.corpus / "ingest-small", CorpusSpec("ingest-small", args.small, 64))
    large = build_corpus(args.corpus / "ingest-large", CorpusSpec("ingest-large", args.large,
                                                                  512))
    admin = os.environ.get("BENCH_DATABASE_URL", LOCAL_DB)
    amqp = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    results: dict[str, object] = {}
    with s3_server() as s3, deployment(admin, amqp, s3) as env:
        env = {**env, "LOG_LEVEL": "WARNING"}
        parts = Path(tempfile.mkdtemp(prefix="bench-ingest-parts-"))
        try:
            one = [storescp(False), do_nothing(), deployed(env, 1), embedded(1)]
            figures = run_case(one, [small.path], args.repeat)
            report("one association, small files", figures, "storescp", small.count)
            results["small_one_association"] = figures
            four = [storescp(True), do_nothing(), deployed(env, 2), embedded(2)]
            figures = run_case(four, split(small.path, parts, SENDERS), args.repeat)
            report(f"{SENDERS} associations at once, small files", figures,
                   "storescp --fork", small.count)
            results["small_four_associations"] = figures
            figures = run_case(one, [large.path], args.repeat)
            report("one association, 512x512 CT files", figures, "storescp", large.count)
            results["large_one_association"] = figures
        finally:
            shutil.rmtree(parts, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
