"""The client's live metrics collector: folded from the engine's records at scrape time."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from pytest_ubench.metrics.columns import Collector
from pytest_ubench.metrics.records import Record
from pytest_ubench.monitor.client_metrics import ClientCollector


def rec(intended: float, ttft: float | None, e2e: float | None, error: str | None = None) -> Record:
    r = Record(intended)
    if ttft is not None:
        r.first = intended + ttft
    if e2e is not None:
        r.end = intended + e2e
    r.error = error
    return r


def scrape(collector: ClientCollector) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_counts_histograms_and_in_flight_across_engines():
    c = ClientCollector()
    rows = Collector(0.0)
    rows.add(rec(0, 0.003, 0.02))
    rows.add(rec(0, None, 0.5, "timeout"))
    first = SimpleNamespace(collector=rows, sent=3, in_flight={"conn": 0.0})  # the third is in flight
    c.attach(first)
    m = scrape(c)
    assert m["ubench_requests_sent_total"] == 3
    assert m['ubench_requests_completed_total{outcome="ok"}'] == 1
    assert m['ubench_requests_completed_total{outcome="error"}'] == 1
    assert m["ubench_requests_in_flight"] == 1
    assert m['ubench_ttft_seconds_bucket{le="0.0025"}'] == 0 and m['ubench_ttft_seconds_bucket{le="0.005"}'] == 1
    assert m["ubench_e2e_seconds_count"] == 1 and abs(m["ubench_e2e_seconds_sum"] - 0.02) < 1e-9
    rows.add(rec(0, 0.2, 0.3))  # the one in flight finishes
    c.detach()
    second = SimpleNamespace(collector=Collector(1.0), sent=1, in_flight={})
    second.collector.add(rec(1, 0.01, 0.05))
    c.attach(second)
    m = scrape(c)
    assert m["ubench_requests_sent_total"] == 4  # counters keep growing across cases
    assert m['ubench_requests_completed_total{outcome="ok"}'] == 3
    assert m["ubench_e2e_seconds_count"] == 3 and m['ubench_e2e_seconds_bucket{le="+Inf"}'] == 3
    assert m["ubench_requests_in_flight"] == 0


def test_blocks_handed_over_between_scrapes_are_counted_once():
    """A fast client fills several blocks between two scrapes: each row is folded exactly once."""
    c = ClientCollector()
    rows = Collector(0.0, block=4)
    engine = SimpleNamespace(collector=rows, sent=0, in_flight={})
    c.attach(engine)
    for i in range(3):
        rows.add(rec(i, 0.001, 0.002))
    assert scrape(c)['ubench_requests_completed_total{outcome="ok"}'] == 3  # from the block being filled
    for i in range(3, 14):  # three blocks handed over (rows 0-11), two rows into a fourth
        rows.add(rec(i, 0.001, 0.002))
    engine.sent = 14
    m = scrape(c)
    assert m['ubench_requests_completed_total{outcome="ok"}'] == 14 and m["ubench_e2e_seconds_count"] == 14
    c.detach()
    assert scrape(c)['ubench_requests_completed_total{outcome="ok"}'] == 14
