"""The load engine against the real llama.cpp server (xllamacpp) on the generated model."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

from pytest_ubench.load.dataset import Prompt
from pytest_ubench.load.engine import LoadPlan, run
from pytest_ubench.load.http import build_request
from pytest_ubench.load.routing import Target
from pytest_ubench.metrics.stats import summary
from pytest_ubench.protocols.openai import PATHS, request_body

pytestmark = pytest.mark.integration


def plan(port: int, protocol: str = "openai-chat", tokens: int = 48, **kw: object) -> LoadPlan:
    reqs = [
        build_request(
            "POST",
            "127.0.0.1",
            port,
            PATHS[protocol],
            request_body(
                protocol, "tiny", Prompt(f"prompt number {i} about benchmarks"), tokens, True, {"temperature": 1.0}
            ),
            {"Content-Type": "application/json"},
        )
        for i in range(16)
    ]
    return LoadPlan(requests=reqs, stream=True, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", ["openai-chat", "openai-completions"])
def test_every_request_streams_exactly_max_tokens(llama_server, protocol):
    port = llama_server.endpoint.port
    r = run(Target("127.0.0.1", port), plan(port, protocol, mode="closed", concurrency=2, duration_s=1.5))
    assert len(r.records) >= 4
    values = r.records.values()
    for i, rec in enumerate(r.records):
        assert rec.ok, rec.error
        assert rec.tokens_from == "usage" and rec.output_tokens == 48
        assert len(rec.chunks) == 48  # one token per SSE chunk on the generated model
        # <=: when the machine is busy, a whole stream can land in one read (first chunk == last)
        assert 0 < values.ttft_ms[i] <= values.e2e_ms[i]
        assert np.count_nonzero(values.itl_row == i) == rec.output_tokens - 1
        assert values.tpot_ms[i] == pytest.approx((values.e2e_ms[i] - values.ttft_ms[i]) / 47)


def test_closed_loop_concurrency_is_what_the_server_sees(llama_server):
    port = llama_server.endpoint.port
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=llama_server.endpoint.url, timeout=5) as client:
            while not stop.is_set():
                slots = client.get("/slots").json()
                seen.append(sum(1 for s in slots if s["is_processing"]))
                time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = run(Target("127.0.0.1", port), plan(port, tokens=96, mode="closed", concurrency=3, duration_s=3.0))
    finally:
        stop.set()
        watcher.join()
    assert all(rec.ok for rec in r.records)
    assert max(seen) == 3  # the server has 4 slots; never more than 3 busy, and 3 reached
    assert seen.count(3) > len(seen) / 4


def test_client_count_matches_the_servers_counter(llama_server):
    url = llama_server.endpoint.url

    def predicted() -> float:
        text = httpx.get(url + "/metrics").text
        return float(
            next(ln.split()[-1] for ln in text.splitlines() if ln.startswith("llamacpp:tokens_predicted_total"))
        )

    before = predicted()
    r = run(
        Target("127.0.0.1", llama_server.endpoint.port),
        plan(llama_server.endpoint.port, tokens=20, mode="closed", concurrency=4, duration_s=1.0),
    )
    s = summary(r.records, r.window_start, r.window_end)
    assert s["throughput"]["output_tokens"] == predicted() - before == 20 * len(r.records)
