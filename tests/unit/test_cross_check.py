"""The quantile cross-check's rule, on a histogram whose quantile buckets are worked out by hand: the
growth of each bucket over the run, the bucket that holds the quantile, and whether the client's quantile
lies in it (widened by the same margin as a mean's)."""

from __future__ import annotations

from pytest_ubench.metrics.columns import Records
from pytest_ubench.metrics.records import Record
from pytest_ubench.metrics.server_queries import CrossCheck
from pytest_ubench.monitor.cross_check import cross_checks


class Histogram:
    """A Prometheus that knows one histogram's cumulative buckets (seconds) at the run's start and end."""

    def __init__(self, before: dict[str, float], after: dict[str, float]) -> None:
        self.at = {0.0: before, 1.0: after}

    def instant_by(self, query: str, at: float, label: str) -> dict[str, float]:
        assert label == "le" and "_bucket" in query
        return self.at[0.0 if at < 1.0 else 1.0]

    def instant(self, query: str, at: float) -> float | None:
        raise AssertionError("quantile checks read buckets only")


def requests(ttft_ms: list[float]) -> Records:
    out = []
    for ms in ttft_ms:
        r = Record(0.0)
        r.start, r.first, r.end = 10.0, 10.0 + ms / 1000, 11.0
        out.append(r)
    return Records.of(out)


def check(monkeypatch, prom: Histogram, ttft_ms: list[float], q: float) -> dict:
    import pytest_ubench.monitor.cross_check as cc

    monkeypatch.setitem(cc.CROSS_CHECKS, "h", [CrossCheck("h.p", "h_seconds", "ttft_ms", "quantile", q)])
    monkeypatch.setattr(cc.time, "time", lambda: 2.0)
    out, complete = cross_checks(prom, ["h"], "j", requests(ttft_ms), 0.0)  # type: ignore[arg-type]
    assert complete
    return out["h.p"]


def test_the_bucket_that_holds_the_quantile_of_the_runs_growth(monkeypatch) -> None:
    # 100 requests before the run (all under 10 ms), then 10 in it: 2 under 10 ms, 6 in (10, 20], 2 in (20, 40]
    before = {"0.01": 100, "0.02": 100, "0.04": 100, "+Inf": 100}
    after = {"0.01": 102, "0.02": 108, "0.04": 110, "+Inf": 110}
    prom = Histogram(before, after)
    p50 = check(monkeypatch, prom, [5, 6, 12, 13, 14, 15, 16, 18, 30, 35], 0.5)
    assert p50["server_bucket"] == [10.0, 20.0] and p50["server"] == 20.0 and round(p50["client"], 6) == 14
    assert p50["agrees"] is True
    p90 = check(monkeypatch, prom, [5, 6, 12, 13, 14, 15, 16, 18, 30, 35], 0.9)
    assert p90["server_bucket"] == [20.0, 40.0] and round(p90["client"], 6) == 30 and p90["agrees"] is True
    # a client whose median lies below the server's bucket: it saw the first token before the server sent it
    assert check(monkeypatch, prom, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5], 0.5)["agrees"] is False
    # ... or far above it (beyond max(10 ms, 25 %) past the bucket's top)
    assert check(monkeypatch, prom, [40, 41, 42, 43, 44, 45, 46, 47, 48, 49], 0.5)["agrees"] is False


def test_an_open_top_bucket_resolves_nothing(monkeypatch) -> None:
    prom = Histogram({"0.3": 0, "+Inf": 0}, {"0.3": 1, "+Inf": 10})  # 9 of 10 above the last finite bound
    got = check(monkeypatch, prom, [400.0] * 10, 0.5)
    assert got["server"] is None and got["server_bucket"] is None and got["agrees"] is None


def test_durations_are_written_as_prometheus_reads_them() -> None:
    """Prometheus refuses "0.5s" (seen: a recipe with interval_s 0.5 could not start it): milliseconds then."""
    from pytest_ubench.metrics.server_queries import duration, resolve

    assert [duration(s) for s in (1, 0.5, 4.8, 15.0)] == ["1s", "500ms", "4800ms", "15s"]
    assert "[4800ms]" in resolve(["vllm"], {}, 1.2, "j")["output_tokens_per_s"]


class WithMean(Histogram):
    """... that also knows the histogram's ``_sum`` (seconds) and ``_count`` at the start and end."""

    def __init__(self, before: dict[str, float], after: dict[str, float], sums: tuple[float, float]) -> None:
        super().__init__(before, after)
        self.sums = sums

    def instant(self, query: str, at: float) -> float | None:
        end = at >= 1.0
        if "_sum" in query:
            return self.sums[end]
        assert "_count" in query
        return self.at[1.0 if end else 0.0]["+Inf"]


def test_a_quantiles_margin_is_its_histograms_mean_margin(monkeypatch) -> None:
    """The front end's queueing is added to each request by the load: a low quantile gets the mean check's
    margin (max(10 ms, 25 % of the server's mean)), not one from its bucket's top. Here: 10 requests in the
    run, 6 in (40, 60] ms, 4 in (100, 250]; server mean 84 ms, so the margin is 21 ms (the bucket's top
    would give 15)."""
    import pytest_ubench.monitor.cross_check as cc

    before = {"0.04": 0, "0.06": 0, "0.1": 0, "0.25": 0, "+Inf": 0}
    after = {"0.04": 0, "0.06": 6, "0.1": 6, "0.25": 10, "+Inf": 10}
    prom = WithMean(before, after, (0.0, 0.84))
    checks = [
        CrossCheck("h", "h_seconds", "ttft_ms", "mean"),
        CrossCheck("h.p", "h_seconds", "ttft_ms", "quantile", 0.5),
    ]
    monkeypatch.setitem(cc.CROSS_CHECKS, "h", checks)
    monkeypatch.setattr(cc.time, "time", lambda: 2.0)

    def run(ttft_ms: list[float]) -> dict:
        out, complete = cross_checks(prom, ["h"], "j", requests(ttft_ms), 0.0)  # type: ignore[arg-type]
        assert complete and round(out["h"]["server"], 6) == 84.0
        return out["h.p"]

    inside = run([70, 72, 74, 76, 78, 78.5, 140, 150, 160, 170])  # p50 (nearest rank) 78 ms: 18 past the top
    assert inside["server_bucket"] == [40.0, 60.0] and round(inside["client"], 6) == 78 and inside["agrees"] is True
    assert run([80, 81, 82, 83, 84, 85, 140, 150, 160, 170])["agrees"] is False  # p50 84 ms: 24 past the top


class Means:
    """A Prometheus that knows histograms' ``_sum`` (seconds) and ``_count`` at the run's start and end
    (None: the series did not exist yet)."""

    def __init__(self, series: dict[str, tuple[tuple[float, float] | None, tuple[float, float]]]) -> None:
        self.series = series
        self.queries: list[str] = []

    def instant(self, query: str, at: float) -> float | None:
        self.queries.append(query)
        for name, (before, after) in self.series.items():
            for part, index in (("_sum", 0), ("_count", 1)):
                if f"{name}{part}{{" in query:
                    point = after if at >= 1.0 else before
                    return None if point is None else point[index]
        raise AssertionError(f"unexpected query {query}")


def test_the_servers_front_end_share_widens_the_margin_of_the_timers_inside_it(monkeypatch) -> None:
    """vLLM's engine timers start after its HTTP front end has parsed, templated and tokenised a request,
    and stop before it streams the last token out; its own HTTP timer covers both. The difference of the
    two means is the server's own account of that time, and a TTFT check allows it on top of its margin.
    Here: engine TTFT mean 50 ms (margin max(10, 12.5)), engine E2E 1,000 ms, HTTP 1,020 ms (a per-handler
    series, born at the run's first request: absent at its start), so 20 ms more."""
    import pytest_ubench.monitor.cross_check as cc
    from pytest_ubench.metrics.server_queries import FrontEnd

    prom = Means({"ttft_seconds": ((0.0, 0.0), (0.5, 10.0)), "e2e_seconds": ((1.0, 1.0), (11.0, 11.0)),
                  "http_seconds": (None, (10.2, 10.0))})  # fmt: skip
    monkeypatch.setitem(
        cc.CROSS_CHECKS, "h", [CrossCheck("h.ttft", "ttft_seconds", "ttft_ms", "mean", inside_front_end=True)]
    )
    monkeypatch.setitem(cc.FRONT_END, "h", FrontEnd("http_seconds", 'handler="/v1/x"', "e2e_seconds"))
    monkeypatch.setattr(cc.time, "time", lambda: 2.0)

    def ttft(ms: float) -> dict:
        out, complete = cross_checks(prom, ["h"], "j", requests([ms] * 10), 0.0)  # type: ignore[arg-type]
        assert complete
        return out["h.ttft"]

    got = ttft(75.0)  # 25 ms above the engine's mean: past 12.5, within 12.5 + 20
    assert round(got["server"], 6) == 50.0 and round(got["front_end_ms"], 6) == 20.0 and got["agrees"] is True
    assert any('handler="/v1/x"' in q and "http_seconds_sum" in q for q in prom.queries)
    assert ttft(83.0)["agrees"] is False  # 33 ms above: past both
    assert ttft(49.0)["agrees"] is False  # below the engine's own timer: never
    monkeypatch.setitem(cc.FRONT_END, "h", FrontEnd("missing_seconds", "", "e2e_seconds"))
    prom.series["missing_seconds"] = (None, (0.0, 0.0))  # a server without the HTTP timer's requests
    no_front = ttft(75.0)
    assert no_front["front_end_ms"] is None and no_front["agrees"] is False  # the fixed margin alone
