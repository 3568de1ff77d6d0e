"""The load client's live figures as Prometheus metrics, scraped beside the server's.

Nothing is added to the load engine's hot path: a custom collector reads the engine's own
counters and the records appended since the previous scrape, when Prometheus asks (once per
scrape interval), in the exporter's thread. Measured alternative: ``Histogram.observe`` per
request costs microseconds each, too much for a client that sends 50,000 requests/s.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

# seconds: wide enough for a loopback stub and for a slow 70B model
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB = "ubench-client"


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, v)] += 1
        self.total += v

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        cumulative, acc = [], 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            acc += count
            cumulative.append((bound, acc))
        return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=self.total)


class ClientCollector(Collector):
    """Cumulative over the session: counters never go back, as Prometheus expects."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: Any = None
        self._seen = 0  # records of the attached engine already folded into the figures
        self._sent_before = 0  # requests sent by engines attached earlier
        self._done = {"ok": 0, "error": 0}
        self._hist = {"ttft": _Histogram(), "e2e": _Histogram()}

    def attach(self, engine: Any) -> None:
        with self._lock:
            self._release()
            self._engine, self._seen = engine, 0

    def detach(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        if self._engine is not None:
            self._fold()
            self._sent_before += len(self._engine.records)
            self._engine = None

    def _fold(self) -> None:
        """Fold finished records in send order; the first one still in flight waits for next time."""
        records = self._engine.records
        i, n = self._seen, len(records)  # an append-only list: entries below n are there to stay
        while i < n and not math.isnan(records[i].end):
            rec = records[i]
            self._done["ok" if rec.error is None else "error"] += 1
            if rec.error is None:
                self._hist["e2e"].observe(rec.end - rec.intended)
                if not math.isnan(rec.first):
                    self._hist["ttft"].observe(rec.first - rec.intended)
            i += 1
        self._seen = i

    def collect(self) -> Iterator[Any]:
        with self._lock:
            sent = self._sent_before
            in_flight = 0
            if self._engine is not None:
                self._fold()
                sent += len(self._engine.records)
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
