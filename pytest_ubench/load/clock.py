"""Clocks of load-client tasks on other nodes, measured against the harness's.

Each task stamps its records on its own clock. Nodes' clocks differ (NTP keeps them within ~1 ms when it
works; a node whose time daemon died can be off by seconds), and a merge that trusts them puts one task's
requests early and another's late: per-second series, windows and server-side comparisons go wrong. So
the harness answers time requests while the client job runs (:class:`TimeServer`, UDP) and each task asks
it at its start and its end (:func:`offset`): Cristian's algorithm over several exchanges, keeping the one
with the shortest round trip, whose half is the bound on the error. The merge shifts each task by its
start offset; the end offset tells how far its clock drifted during the run.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from dataclasses import dataclass

from loguru import logger

_REPLY = struct.Struct("!16sq")  # the asker's nonce, then the harness's time in ns since the epoch
PROBES = 16


class ClockError(Exception):
    """The harness's time server did not answer (a firewall, a name that does not resolve)."""


@dataclass(frozen=True)
class Offset:
    """Harness time minus this clock's time, in seconds, within +- ``error_s`` (half the round trip)."""

    offset_s: float
    error_s: float


class TimeServer:
    """Answers every datagram (a 16-byte nonce) with the nonce and this clock's time, until closed. Bound to
    every address of the harness's host, on a free port: the tasks reach it by the host's name."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.address = f"{socket.gethostname()}:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ubench-time-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(64)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) == 16:
                self.sock.sendto(_REPLY.pack(data, time.time_ns()), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def __enter__(self) -> TimeServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def offset(address: str, probes: int = PROBES, timeout_s: float = 1.0) -> Offset:
    """This clock against the time server at ``HOST:PORT``: the exchange with the shortest round trip."""
    host, _, port = address.rpartition(":")
    best: Offset | None = None
    try:
        target = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_DGRAM)[0][4]
    except (OSError, ValueError) as exc:
        raise ClockError(f"time server {address}: {exc}") from None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        for _ in range(probes):
            nonce = os.urandom(16)
            sent = time.time_ns()
            try:
                sock.sendto(nonce, target)
                while True:  # a late answer to an earlier probe is not this one's
                    data = sock.recv(64)
                    if len(data) == _REPLY.size and data[:16] == nonce:
                        break
            except OSError as exc:  # TimeoutError included
                logger.debug("time server {}: {}", address, exc)
                continue
            back = time.time_ns()
            theirs = _REPLY.unpack(data)[1]
            rtt = (back - sent) / 1e9
            if best is None or rtt / 2 < best.error_s:
                best = Offset((theirs - (sent + back) / 2) / 1e9, rtt / 2)
    if best is None:
        raise ClockError(f"time server {address}: no answer to {probes} requests")
    return best
