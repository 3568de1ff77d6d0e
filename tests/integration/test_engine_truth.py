"""The load engine against a server that records when it wrote every chunk (ground truth)."""

from __future__ import annotations

import itertools
import json
import statistics
import urllib.request

import pytest

from pytest_ubench.load.dataset import Prompt
from pytest_ubench.load.engine import LoadPlan, run
from pytest_ubench.load.http import build_request
from pytest_ubench.load.routing import Target
from pytest_ubench.metrics.stats import summary
from pytest_ubench.protocols.openai import request_body

pytestmark = pytest.mark.integration


def plan(port: int, *, tokens: int = 32, stream: bool = True, **kw: object) -> LoadPlan:
    body = request_body("openai-chat", "m", Prompt("hello"), tokens, stream, {})
    raw = build_request("POST", "127.0.0.1", port, "/v1/chat/completions", body, {"Content-Type": "application/json"})
    return LoadPlan(requests=[raw], stream=stream, **kw)  # type: ignore[arg-type]


def truth(dep) -> list[dict]:
    return json.load(urllib.request.urlopen(dep.endpoint.url + "/truth"))


# The targets (1.5 ms at 16 streams, 3 ms at 64) are measured and printed by
# benchmarks/perf/client_perf.py (measured: +0.97 / +1.49 ms). Here the bounds leave room for a noisy shared
# CI machine (seen: one run in about eight over 1.5 ms at 16 streams; at 64 streams 1.5-2.8 ms in 8 quiet runs,
# 4.04 ms once in CI while another process worked beside it) and still catch a client that lags the stream,
# as httpx does at 64 streams (+50 ms).
@pytest.mark.parametrize(("streams", "ttft_tol_ms"), [(16, 2.5), (64, 5.0)])
def test_ttft_and_itl_match_the_servers_clock(truth_server, streams, ttft_tol_ms):
    dep = truth_server("--ttft-ms", "40", "--itl-ms", "8")
    r = run(
        Target("127.0.0.1", dep.endpoint.port),
        plan(dep.endpoint.port, mode="closed", concurrency=streams, duration_s=3.0),
    )
    s = summary(r.measured, r.window_start, r.window_end)
    assert s["requests"]["failed"] == 0 and s["requests"]["ok"] >= streams
    t = truth(dep)
    true_ttft = statistics.median((x["writes"][0] - x["received"]) * 1000 for x in t)
    true_itl = statistics.median((b - a) * 1000 for x in t for a, b in itertools.pairwise(x["writes"]))
    # The client can only be later than the server's write, never earlier.
    error = s["metrics"]["ttft_ms"]["p50"] - true_ttft
    assert 0 <= error < ttft_tol_ms, f"TTFT p50 off by {error:.2f} ms at {streams} streams"
    assert abs(s["metrics"]["itl_ms"]["p50"] - true_itl) < 0.3


def test_every_request_is_accounted_for(truth_server):
    """Requests in flight when the window closes are awaited: the client's count equals the server's."""
    dep = truth_server("--ttft-ms", "200", "--itl-ms", "20")
    r = run(
        Target("127.0.0.1", dep.endpoint.port),
        plan(dep.endpoint.port, mode="closed", concurrency=8, duration_s=1.0, tokens=10),
    )
    assert len(truth(dep)) == len(r.records) == sum(1 for x in r.records if x.ok)
    assert all(x.output_tokens == 10 and len(x.chunks) == 10 for x in r.records)


def test_open_loop_measures_from_the_intended_time(truth_server):
    """Coordinated omission: a server serving one request at a time, offered twice its capacity.

    Each request takes ~100 ms at the server, but requests queue: latency measured from the
    intended send time must grow with the queue, as a user would experience it.
    """
    dep = truth_server("--ttft-ms", "50", "--itl-ms", "10", "--slots", "1")
    r = run(
        Target("127.0.0.1", dep.endpoint.port),
        plan(dep.endpoint.port, tokens=6, mode="open", rate=20, arrival="constant", duration_s=2.0),
    )
    s = summary(r.measured, r.window_start, r.window_end)
    assert s["requests"]["total"] == 40 and s["requests"]["failed"] == 0
    server_side = max((x["writes"][-1] - x["received"]) * 1000 for x in truth(dep))
    assert server_side < 150
    # 40 requests x 100 ms of service offered in 2 s: the last waits ~2 s.
    assert s["metrics"]["e2e_ms"]["max"] > 1500
    assert s["metrics"]["e2e_ms"]["p50"] > 5 * server_side / 2
    assert s["metrics"]["send_lag_ms"]["p50"] < 5  # the client itself kept to the schedule


def test_warmup_is_excluded(truth_server):
    dep = truth_server("--ttft-ms", "5", "--itl-ms", "1")
    r = run(
        Target("127.0.0.1", dep.endpoint.port),
        plan(dep.endpoint.port, tokens=4, mode="open", rate=50, arrival="constant", duration_s=1.0, warmup_s=0.5),
    )
    assert sum(x.warmup for x in r.records) == 25
    assert len(r.measured) == 50


def test_server_dying_mid_run_is_recorded_not_hidden(truth_server):
    dep = truth_server("--ttft-ms", "5", "--itl-ms", "1", "--die-after", "10")
    r = run(
        Target("127.0.0.1", dep.endpoint.port),
        plan(dep.endpoint.port, tokens=4, mode="closed", concurrency=2, duration_s=1.0),
    )
    s = summary(r.measured, r.window_start, r.window_end)
    # The 11th request kills the server; the 10th may still be streaming at that moment.
    assert s["requests"]["ok"] in (9, 10)
    assert s["requests"]["failed"] > 0 and s["requests"]["total"] == s["requests"]["ok"] + s["requests"]["failed"]
    assert set(s["requests"]["errors"]) <= {"disconnected", "connect"}


def test_request_timeout(truth_server):
    dep = truth_server("--ttft-ms", "3000", "--itl-ms", "1")
    r = run(
        Target("127.0.0.1", dep.endpoint.port),
        plan(dep.endpoint.port, tokens=2, mode="closed", concurrency=1, duration_s=0.2, request_timeout_s=0.5),
    )
    (only,) = r.records
    assert only.error == "timeout" and 0.45 < only.end - only.start < 1.0


def test_non_streaming(truth_server):
    dep = truth_server("--ttft-ms", "5", "--itl-ms", "1")
    r = run(
        Target("127.0.0.1", dep.endpoint.port),
        plan(dep.endpoint.port, tokens=5, stream=False, mode="closed", concurrency=2, duration_s=0.5),
    )
    assert r.records and all(x.ok and x.output_tokens == 5 and x.tokens_from == "usage" for x in r.records)


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_a_request_budget_that_runs_out_first_ends_the_window(truth_server, mode):
    """max_requests reached long before duration_s: throughput is over the time the load took (the server's
    first receipt to its last write), not over the planned 30 s, which once reported 5 tok/s for 684."""
    dep = truth_server("--ttft-ms", "20", "--itl-ms", "2")
    shape = {"concurrency": 4} if mode == "closed" else {"rate": 50.0, "arrival": "constant"}
    r = run(Target("127.0.0.1", dep.endpoint.port), plan(dep.endpoint.port, mode=mode, duration_s=30.0,
                                                          max_requests=20, **shape))  # fmt: skip
    s = summary(r.measured, r.window_start, r.window_end)
    t = truth(dep)
    span = max(x["writes"][-1] for x in t) - min(x["received"] for x in t)
    assert s["requests"]["ok"] == len(t) == 20
    assert s["throughput"]["elapsed_s"] == pytest.approx(span, abs=0.05), (s["throughput"], span)
    assert s["throughput"]["requests_per_s"] == pytest.approx(20 / span, rel=0.1)
