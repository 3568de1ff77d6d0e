"""Where each request goes: one service, or its replicas, whose requests are spread by a routing rule; a
replica that refuses a connection is taken as dead, and the requests it broke are told apart."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter

from loguru import logger

from ..metrics.records import Record
from ..orchestrators.base import address, tls_context
from .http import Pool, RequestFailed


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    tls: bool = False  # HTTPS, verified against the system's CA store (SSL_CERT_FILE is honoured)

    @classmethod
    def of_url(cls, url: str) -> Target:
        return cls(*address(url), tls=url.startswith("https:"))


Targets = Target | Sequence[Target]  # one service, or its replicas

# How a request fails when the connection under it breaks: the server (or its node) may have died.
BROKEN = ("disconnected", "connection_closed", "connect")


class Router:
    """Connection pools to each target and the rule that picks one per request: ``least-outstanding`` (the
    fewest requests in flight from this client, ties in turn), ``round-robin`` or ``random`` (seeded).

    A target that refuses a connection is lost for the rest of the run (nothing listens there: its server
    or node died); requests go to the others, and the ones whose connection broke on it since its last
    success, which were in flight when it died, become ``replica_lost``. Until their fate is known the router
    holds them; ``settle`` takes each once it is (the engine's records). With one target, none of this
    applies: its failures are its own."""

    def __init__(
        self,
        targets: Sequence[Target],
        routing: str,
        seed: int,
        connect_timeout_s: float,
        settle: Callable[[Record], None] = lambda rec: None,
    ) -> None:
        self.settle = settle
        self.targets = targets
        self.pools = [Pool(t.host, t.port, connect_timeout_s, tls_context() if t.tls else None) for t in targets]
        self.routing = routing
        self.outstanding = [0] * len(targets)
        self.lost: dict[int, float] = {}  # target -> perf_counter() when it refused a connection
        self._suspects: list[list[Record]] = [[] for _ in targets]
        self._turn = itertools.count()
        self._rng = random.Random(seed)

    def route(self) -> int:
        """The target of the next request, among those not lost (all lost: the first, which fails)."""
        n = len(self.pools)
        if n == 1:
            return 0
        start = next(self._turn)
        live = [k % n for k in range(start, start + n) if k % n not in self.lost]
        if not live:
            return 0
        if self.routing == "round-robin":
            return live[0]
        if self.routing == "random":
            return self._rng.choice(live)
        return min(live, key=self.outstanding.__getitem__)  # the first of the least loaded, from a moving start

    def failover(self, k: int, why: str) -> int:
        """Target ``k`` refused a connection: lose it and give the next target to try, or -1 (none left, or
        there is only one: the failure is the request's)."""
        if len(self.pools) == 1:
            return -1
        if k not in self.lost:
            self.lost[k] = perf_counter()
            for rec in self._suspects[k]:
                rec.error = "replica_lost"
            self._release(k)
            target = self.targets[k]
            left = len(self.pools) - len(self.lost)
            logger.warning("replica {} ({}:{}) lost ({}); {} left", k, target.host, target.port, why, left)
        return self.route() if len(self.lost) < len(self.pools) else -1

    def served(self, k: int) -> None:
        """A success on ``k``: its earlier broken connections were not its death."""
        if self._suspects[k]:
            self._release(k)

    def _release(self, k: int) -> None:
        for rec in self._suspects[k]:
            self.settle(rec)
        self._suspects[k].clear()

    def holds(self, rec: Record) -> bool:
        """Whether a finished request waits here for its replica's fate (``settle`` will take it)."""
        held = self._suspects[rec.replica]  # empty but after a broken connection: nothing to scan
        return bool(held) and any(r is rec for r in held)

    def broken(self, k: int, rec: Record, exc: RequestFailed) -> RequestFailed:
        """What a request that failed on ``k`` counts as: ``replica_lost`` on a lost replica; a broken
        connection on a live one is kept in mind in case the replica turns out dead."""
        if len(self.pools) > 1 and exc.kind in BROKEN:
            if k in self.lost:
                return RequestFailed("replica_lost")
            self._suspects[k].append(rec)
        return exc

    def close(self) -> None:
        """The run is over: the requests still held keep their own failure."""
        for k in range(len(self.pools)):
            self._release(k)
        for pool in self.pools:
            pool.close()
