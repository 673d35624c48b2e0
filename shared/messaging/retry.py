"""Pausing consumers while a dependency is down, shared by both brokers.

A handler that fails because the database or the object store is unreachable says nothing
about its message. When a broker is given a ``dependencies`` check (a coroutine that raises
while a dependency is down), every handler failure is followed by that check: if it fails,
the failure is put down to an outage and not counted against the message. The
:class:`DependencyGate` then closes: no handler starts while it is closed, the failed
delivery waits and runs again once the check passes (probed every ``probe_interval``
seconds), so an outage of any length spends no deliveries and dead-letters nothing.
Failures while the dependencies answer are counted and retried with a growing delay
(:meth:`shared.messaging.topology.Topology.delay_after`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

DependencyCheck = Callable[[], Awaitable[None]]


class DependencyGate:
    """Open while the dependencies answer; see the module documentation."""

    def __init__(self, check: DependencyCheck | None, probe_interval: float) -> None:
        self._check = check
        self._probe_interval = probe_interval
        self._open = asyncio.Event()
        self._open.set()
        self._probe: asyncio.Task[None] | None = None
        self._closed_at = 0.0
        self.outages = 0

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def wait_open(self) -> None:
        """Return at once while the dependencies answer, else when they answer again."""
        await self._open.wait()

    async def outage(self) -> bool:
        """After a handler failure: True (and the gate closed) if a dependency is down."""
        if self._check is None:
            return False
        if not self._open.is_set():
            return True
        try:
            await self._check()
        except Exception as exc:
            self._close(exc)
            return True
        return False

    def _close(self, exc: Exception) -> None:
        if not self._open.is_set():
            return
        self._open.clear()
        self.outages += 1
        self._closed_at = time.monotonic()
        # The check's message names the dependency (database, storage), never data.
        log.warning("a dependency is down, consumers paused: %s", _describe(exc))
        self._probe = asyncio.create_task(self._wait_for_recovery(), name="dependency probe")

    async def _wait_for_recovery(self) -> None:
        assert self._check is not None
        while True:
            await asyncio.sleep(self._probe_interval)
            try:
                await self._check()
            except Exception:
                continue
            break
        log.warning("dependencies answer again after %.1f s, consumers resumed",
                    time.monotonic() - self._closed_at)
        self._open.set()

    async def close(self) -> None:
        """Stop probing (at shutdown)."""
        probe, self._probe = self._probe, None
        if probe is not None and not probe.done():
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
