"""Settings every association of ours gets, as SCP or as SCU."""

from __future__ import annotations

import socket

from pynetdicom import evt

# pynetdicom's DUL thread polls its socket and queues, sleeping 1 ms when idle: with one
# C-STORE at a time on an association, that sleep is paid on every object (3.4 s against
# 2.6 s for 1,000 small objects here). A shorter sleep while the association is open
# costs a little CPU and gives the time back.
DUL_POLL_SECONDS = 0.0002


def set_nodelay(event: evt.Event) -> None:
    """An ``EVT_CONN_OPEN`` handler: disable Nagle's algorithm (small PDUs would otherwise
    wait 40 ms for an ACK) and poll the association's socket more often."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    event.assoc.dul._run_loop_delay = DUL_POLL_SECONDS
