"""The load client's live figures as Prometheus metrics, scraped beside the server's.

Nothing is added to the load engine's hot path: a custom collector reads the engine's own
counters and folds the rows of finished requests it has not seen, when Prometheus asks (once per
scrape interval, in the exporter's thread) and when a block of rows is handed over (a column at a
time). Measured alternative: ``Histogram.observe`` per request costs microseconds each, too much for a
client that sends 50,000 requests/s.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

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

    Locks: the engine's collector's first, then this one's (a block handed over at its flush holds the
    collector's while it calls ``_flushed``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: Any = None
        self._seen = 0  # rows of the engine's current block already folded into the figures
        self._sent_before = 0  # requests sent by engines attached earlier
        self._done = {"ok": 0, "error": 0}
        self._hist = {"ttft": _Histogram(), "e2e": _Histogram()}

    def attach(self, engine: Any) -> None:
        with self._lock:
            self._release()
            self._engine, self._seen = engine, 0
            engine.collector.watchers.append(self._flushed)

    def detach(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        """The attached engine's last rows folded in (it has stopped: no block is flushed meanwhile)."""
        if self._engine is not None:
            collector = self._engine.collector
            self._fold(collector.recent()[self._seen :])
            self._sent_before += self._engine.sent
            collector.watchers.remove(self._flushed)
            self._engine = None

    def _flushed(self, rows: np.ndarray) -> None:
        with self._lock:
            self._fold(rows[self._seen :])
            self._seen = 0

    def _fold(self, rows: np.ndarray) -> None:
        done = rows[~np.isnan(rows["end"])]  # an arrival dropped unsent never finished
        ok = done[done["error"] == 0]
        self._done["ok"] += len(ok)
        self._done["error"] += len(done) - len(ok)
        self._hist["e2e"].observe(ok["end"] - ok["intended"])
        ttft = ok["first"] - ok["intended"]
        self._hist["ttft"].observe(ttft[~np.isnan(ttft)])

    def collect(self) -> Iterator[Any]:
        engine = self._engine
        with engine.collector.lock if engine is not None else contextlib.nullcontext(), self._lock:
            sent = self._sent_before
            in_flight = 0
            if self._engine is not None and self._engine is engine:
                rows = engine.collector.recent()
                self._fold(rows[self._seen :])
                self._seen = len(rows)
                sent += engine.sent
                in_flight = len(engine.in_flight)
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
