"""The load client's live figures as Prometheus metrics, scraped beside the server's.

Nothing is added to the load engine's hot path: a custom collector reads the engine's own
counters and folds the rows of finished requests it has not seen, when Prometheus asks (once per
scrape interval, in the exporter's thread) and when a block of rows is handed over (a column at a
time). Measured alternative: ``Histogram.observe`` per request costs microseconds each, too much for a
client that sends 50,000 requests/s.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ..metrics.columns import Follower

# seconds: wide enough for a loopback stub and for a slow 70B model
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB = "ubench-client"


class _Histogram:
    def __init__(self) -> None:
        self.counts = np.zeros(len(BUCKETS) + 1, dtype=np.int64)
        self.total = 0.0

    def observe(self, values: np.ndarray) -> None:
        self.counts += np.bincount(np.searchsorted(BUCKETS, values, side="left"), minlength=len(BUCKETS) + 1)
        self.total += float(values.sum())

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        cumulative = list(zip((*map(str, BUCKETS), "+Inf"), np.cumsum(self.counts).tolist(), strict=True))
        return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=self.total)


class ClientCollector(Collector):
    """Cumulative over the session: counters never go back, as Prometheus expects.

    Locks: the engine's collector's first, then this one's (the collector holds its own while it hands rows
    to ``_fold``), never the other way round.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: Any = None
        self._follower: Follower | None = None
        self._sent_before = 0  # requests sent by engines attached earlier
        self._done = {"ok": 0, "error": 0}
        self._hist = {"ttft": _Histogram(), "e2e": _Histogram()}

    def attach(self, engine: Any) -> None:
        self.detach()
        follower = engine.collector.follow(self._fold)
        with self._lock:
            self._engine, self._follower = engine, follower

    def detach(self) -> None:
        """The attached engine's last rows folded in (it has stopped)."""
        with self._lock:
            engine, follower = self._engine, self._follower
            self._engine = self._follower = None
        if engine is None or follower is None:
            return
        engine.collector.catch_up(follower)
        engine.collector.unfollow(follower)
        with self._lock:
            self._sent_before += engine.sent

    def _fold(self, rows: np.ndarray, chunk_us: np.ndarray) -> None:
        # Column by column: picking rows of a structured array copies them slowly, on the load's event loop.
        done = ~np.isnan(rows["end"])  # an arrival dropped unsent never finished
        ok = done & (rows["error"] == 0)
        n_done, n_ok = int(np.count_nonzero(done)), int(np.count_nonzero(ok))
        intended = rows["intended"][ok]
        ttft = rows["first"][ok] - intended
        with self._lock:
            self._done["ok"] += n_ok
            self._done["error"] += n_done - n_ok
            self._hist["e2e"].observe(rows["end"][ok] - intended)
            self._hist["ttft"].observe(ttft[~np.isnan(ttft)])

    def collect(self) -> Iterator[Any]:
        engine, follower = self._engine, self._follower
        if engine is not None and follower is not None:
            engine.collector.catch_up(follower)
        with self._lock:
            sent = self._sent_before
            in_flight = 0
            if self._engine is not None:
                sent += self._engine.sent
                in_flight = len(self._engine.in_flight)
            yield CounterMetricFamily("ubench_requests_sent", "requests sent (warm-up included)", value=sent)
            done = CounterMetricFamily("ubench_requests_completed", "requests finished", labels=["outcome"])
            for outcome, count in self._done.items():
                done.add_metric([outcome], count)
            yield done
            yield GaugeMetricFamily("ubench_requests_in_flight", "requests sent, not finished", value=in_flight)
            yield self._hist["ttft"].family("ubench_ttft_seconds", "time to first token, from the intended send")
            yield self._hist["e2e"].family("ubench_e2e_seconds", "request latency, from the intended send")


class ClientExporter:
    """An HTTP /metrics endpoint on loopback for the session's load client."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.collector = ClientCollector()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.host = host
        self.port = int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
