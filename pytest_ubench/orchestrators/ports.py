"""Ports for services on this host or a node: free, and below the kernel's ephemeral range."""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Ports for services are drawn from below the kernel's ephemeral range: a port from inside it can be
# taken by any outgoing connection between our probe and the service's bind (seen in CI as
# "address already in use"), one from below it only by another listener.
PORT_FLOOR = 20000


def ephemeral_floor() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str) -> int:
    """A port nothing listens on, outside the ephemeral range when there is room below it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    top = ephemeral_floor()
    if top - PORT_FLOOR >= 1000:
        rng = random.Random()
        for _ in range(200):
            with socket.socket(family, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, rng.randrange(PORT_FLOOR, top)))
                except OSError:
                    continue
                return int(s.getsockname()[1])
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
