"""Orthanc as a real DICOM peer for the tests: the PACS we query and retrieve from, and the
destination we export to.

Each :class:`Orthanc` is a private instance (Debian's ``/usr/sbin/Orthanc``) with its own
configuration and storage folder, on free loopback ports, started in about 0.2 s. It knows
the modalities it may send to (``modalities``: AE title -> (host, port)), accepts every
calling AE for C-FIND, C-MOVE, C-GET, C-STORE and C-ECHO, and checks the called AE title
when ``check_called_aet`` (to catch a wrong one). Its REST API (``rest``) loads and
inspects instances. ``TCP_NODELAY=1`` keeps DCMTK inside it from waiting 40 ms per PDU.

:class:`CuttingProxy` stands between Orthanc and a receiver and can cut a transfer short
after some bytes, for retrieves that the PACS reports as interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.s3_server import free_port

ORTHANC = "/usr/sbin/Orthanc"


class Orthanc:
    """One running Orthanc; stop it with :meth:`stop` (the fixture does)."""

    def __init__(
        self,
        folder: Path,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, int]] | None = None,
        check_called_aet: bool = True,
        extra: dict[str, Any] | None = None,
        dicom_port: int | None = None,
    ) -> None:
        self.folder = folder
        self.aet = aet
        self.host = "127.0.0.1"
        self.dicom_port = dicom_port or free_port()
        self.http_port = free_port()
        self.modalities = dict(modalities or {})
        self.check_called_aet = check_called_aet
        self.extra = dict(extra or {})
        self.process: subprocess.Popen[bytes] | None = None

    # -- life cycle ---------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            "Name": self.aet,
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "StorageCompression": False,
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": self.check_called_aet,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowMove": True,
            "DicomAlwaysAllowGet": True,
            "DicomModalities": {
                name: [name, host, port] for name, (host, port) in self.modalities.items()
            },
            "DefaultEncoding": "Utf8",
            "DicomScuTimeout": 10,
            "DicomScpTimeout": 30,
            "UnknownSopClassAccepted": True,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "StableAge": 1,
            **self.extra,
        }

    def start(self) -> Orthanc:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "orthanc.json"
        config.write_text(json.dumps(self._config(), indent=2))
        log = (self.folder / "orthanc.log").open("ab")
        self.process = subprocess.Popen(
            [ORTHANC, str(config)], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start: {self.log_tail()}")
            try:
                self.rest("GET", "/system")
                with socket.create_connection((self.host, self.dicom_port), timeout=1):
                    return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        raise RuntimeError(f"Orthanc did not start: {self.log_tail()}")

    def stop(self, kill: bool = False) -> None:
        """Stop it (``kill``: at once, as a crash or the end of a test; else as a shutdown,
        which takes Orthanc a few seconds)."""
        if self.process is not None and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same ports with the same storage (a PACS reboot)."""
        self.stop()
        self.start()

    def set_modality(self, aet: str, host: str, port: int) -> None:
        """Add or change a C-MOVE destination (through the REST API: no restart)."""
        self.modalities[aet] = (host, port)
        self.rest("PUT", f"/modalities/{aet}",
                  {"AET": aet, "Host": host, "Port": port})

    def log_tail(self, lines: int = 30) -> str:
        path = self.folder / "orthanc.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- REST ---------------------------------------------------------------------

    def rest(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(
            f"http://{self.host}:{self.http_port}{path}", data=data, method=method,
            headers={"Content-Type": "application/dicom" if raw is not None
                     else "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            return payload

    def upload(self, files: list[Path]) -> list[str]:
        """Store files through the REST API; the Orthanc IDs of the instances."""
        ids = []
        for path in files:
            answer = self.rest("POST", "/instances", raw=path.read_bytes())
            ids.append(str(answer["ID"]))
        return ids

    def upload_bytes(self, data: bytes) -> str:
        return str(self.rest("POST", "/instances", raw=data)["ID"])

    def instances(self) -> list[str]:
        return [str(i) for i in self.rest("GET", "/instances")]

    def sop_instance_uids(self) -> set[str]:
        """The SOP Instance UIDs of every instance stored."""
        uids = set()
        for orthanc_id in self.instances():
            tags = self.rest("GET", f"/instances/{orthanc_id}/simplified-tags")
            uids.add(str(tags["SOPInstanceUID"]))
        return uids

    def instance_file(self, orthanc_id: str) -> bytes:
        data = self.rest("GET", f"/instances/{orthanc_id}/file")
        assert isinstance(data, bytes)
        return data

    def delete_instance(self, orthanc_id: str) -> None:
        self.rest("DELETE", f"/instances/{orthanc_id}")

    def clear(self) -> None:
        for patient in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{patient}")


class CuttingProxy:
    """A TCP proxy on loopback to ``target``: it forwards every connection both ways, and
    while ``cut_after`` is set, closes the first connection that has carried that many
    bytes towards the target (then clears it, so the next transfer passes whole)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.cut_after: int | None = None
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(None)
            budget = [self.cut_after]
            threading.Thread(target=self._pump, args=(client, upstream, budget),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, [None]),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, budget: list[int | None]) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                limit = budget[0]
                if limit is not None:
                    if len(data) >= limit:
                        sink.sendall(data[:limit])
                        self.cut_after = None
                        self.cuts += 1
                        break
                    budget[0] = limit - len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._stopped = True
        self._listener.close()


def orthanc_available() -> bool:
    return Path(ORTHANC).exists() or shutil.which("Orthanc") is not None


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Any]:
    """``orthanc_factory(aet, modalities=..., check_called_aet=...)`` starts an Orthanc in
    the test's temporary folder; every one started is stopped after the test."""
    if not orthanc_available():
        pytest.fail("Orthanc is not installed: run `make system-packages` (Debian: orthanc)")
    started: list[Orthanc] = []

    def start(aet: str = "ORTHANC", **options: Any) -> Orthanc:
        server = Orthanc(tmp_path / f"orthanc-{aet.lower()}-{len(started)}", aet, **options)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop(kill=True)
