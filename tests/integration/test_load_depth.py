"""Load shapes, capacity questions, repeats and the client's self-check, against real servers."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from helpers import record_rows, truth_recipe

from pytest_ubench import Services, expand, run_case
from pytest_ubench import load_recipe as load
from pytest_ubench.load import engine, parallel, routing
from pytest_ubench.load.dataset import Prompt
from pytest_ubench.load.http import build_request
from pytest_ubench.metrics import stats
from pytest_ubench.orchestrators.base import ServiceError
from pytest_ubench.protocols.openai import request_body

pytestmark = pytest.mark.integration


def _plan(port: int, *, stream: bool = False, tokens: int = 4, **kw: object) -> engine.LoadPlan:
    body = request_body("openai-chat", "m", Prompt("hello"), tokens, stream, {})
    raw = build_request("POST", "127.0.0.1", port, "/v1/chat/completions", body, {"Content-Type": "application/json"})
    return engine.LoadPlan(requests=[raw], stream=stream, **kw)  # type: ignore[arg-type]


def _truth(dep) -> list[dict]:
    return json.load(urllib.request.urlopen(dep.endpoint.url + "/truth"))


SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "results-schema.json").read_text())


def _run(write_recipe, tmp_path: Path, recipe: dict):
    (case,) = expand(load(write_recipe(recipe)))
    with Services(tmp_path / "out", monitoring=False) as services:
        res = run_case(case, services)
    jsonschema.validate(res.result, SCHEMA)  # every new part is in the published schema
    return res


def test_worker_processes_send_the_one_schedule_and_merge_exactly(truth_server):
    dep = truth_server("--ttft-ms", "2", "--itl-ms", "0")
    plan = _plan(dep.endpoint.port, mode="open", rate=300.0, duration_s=2.0, seed=3)
    run = parallel.run(routing.Target("127.0.0.1", dep.endpoint.port), plan, workers=2)
    whole = engine.schedule_of(plan)
    assert len(run.records) == len(whole) == len(_truth(dep))  # every arrival sent once, none lost in merging
    sent = np.array(sorted(r.intended for r in run.records)) - run.t0
    assert np.allclose(sent, whole.offsets, rtol=0, atol=0.5e-6)  # the single-process schedule, to the µs kept
    assert all(r.ok for r in run.records)
    assert len(run.client) == 2 and all(h.cpu for h in run.client)
    lag = stats.summary(run.measured, run.window_start, run.window_end)["metrics"]["send_lag_ms"]
    assert lag["p99"] < 50


class SlowToSetUp:
    """A protocol adapter whose setup (connect, preload) takes 1.5 s and whose calls take 20 ms; it writes
    down, on the host's monotonic clock, when its setup ended and when each call began (a file a process)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir

    def __call__(self) -> SlowToSetUp:
        return self

    async def open(self, connections: int) -> None:
        import asyncio
        import os
        import time

        await asyncio.sleep(1.5)
        self.log = (self.log_dir / f"{os.getpid()}.log").open("w", buffering=1)
        self.log.write(f"setup {time.perf_counter()}\n")

    async def call(self, rec, index: int) -> None:
        import asyncio
        import time

        self.log.write(f"call {time.perf_counter()}\n")
        await asyncio.sleep(0.02)

    async def close(self) -> None:
        self.log.close()


def test_each_client_process_sets_up_before_the_shared_clock_starts(tmp_path):
    """Client processes start together once every one is set up: a preload is not load. A CI run lost a
    whole 3 s case (MinIO's 17 MiB objects preloaded by each process after the shared start: no request
    in the window). Oracle: the adapters' own notes of when their setup ended and their calls began."""
    plan = engine.LoadPlan(requests=[], stream=False, mode="closed", concurrency=4, duration_s=1.0,
                           adapter=SlowToSetUp(tmp_path))  # fmt: skip
    run = parallel.run(routing.Target("127.0.0.1", 9), plan, workers=2)
    notes = [line.split() for log in tmp_path.glob("*.log") for line in log.read_text().splitlines()]
    setups = [float(t) for kind, t in notes if kind == "setup"]
    calls = sorted(float(t) for kind, t in notes if kind == "call")
    assert len(setups) == 2 and max(setups) <= run.t0, (setups, run.t0)
    assert calls[0] - run.window_start < 0.2 and run.window_end - calls[-1] < 0.2, (calls[0], calls[-1], run.t0)
    assert len(run.measured) >= 50 and all(r.ok for r in run.records)  # 4 users x 20 ms over 1 s: ~200


class RefusedAtSetUp(SlowToSetUp):
    async def open(self, connections: int) -> None:
        raise ServiceError("db at host:1: password authentication failed")


def test_a_client_process_whose_setup_fails_says_why(tmp_path):
    plan = engine.LoadPlan(requests=[], stream=False, mode="closed", concurrency=4, duration_s=1.0,
                           adapter=RefusedAtSetUp(tmp_path))  # fmt: skip
    with pytest.raises(ServiceError, match=r"load client process \d: db at host:1: password authentication failed"):
        parallel.run(routing.Target("127.0.0.1", 9), plan, workers=2)


def test_max_in_flight_drops_and_counts_what_could_not_start(truth_server):
    dep = truth_server("--ttft-ms", "100", "--itl-ms", "0", "--slots", "1")
    plan = _plan(dep.endpoint.port, mode="open", rate=50.0, arrival="constant", duration_s=1.0, max_in_flight=3)
    run = engine.run(routing.Target("127.0.0.1", dep.endpoint.port), plan)
    s = stats.summary(run.measured, run.window_start, run.window_end)
    assert s["requests"]["dropped"] > 20  # 50 scheduled, a serial 100 ms server takes ~10 in a second
    assert s["requests"]["dropped"] + s["requests"]["total"] == 50
    assert s["requests"]["total"] == len(_truth(dep)) and s["requests"]["failed"] == 0


def test_trace_replay_sends_at_the_trace_times_with_its_bodies(write_recipe, tmp_path):
    trace = tmp_path / "recipes" / "trace.jsonl"
    trace.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"timestamp": 50.0 + t, "prompt": f"p{i}", "max_tokens": i + 1} for i, t in enumerate([0, 0.2, 0.6, 1.0])]
    rows.append({"timestamp": 51.4, "body": {"messages": [{"role": "user", "content": "x"}], "max_tokens": 7}})
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = truth_recipe("trace", load={"mode": "open", "trace": {"path": "trace.jsonl", "speed": 2.0}}, warmup_s=0)
    res = _run(write_recipe, tmp_path, recipe)
    records = record_rows(res.run_dir)
    intended = [r["intended_us"] / 1000 for r in records]
    assert intended == pytest.approx([0, 100, 300, 500, 700], abs=0.01)
    assert [r["output_tokens"] for r in records] == [1, 2, 3, 4, 7]
    assert res.result["dataset"] == {"kind": "trace", "path": "trace.jsonl", "speed": 2.0, "prompts": 5}


def test_a_ramp_reports_every_step(write_recipe, tmp_path):
    ramp = {"mode": "open", "rate": {"from": 10, "to": 40, "steps": 3, "step_s": 1.5}, "arrival": "constant"}
    res = _run(write_recipe, tmp_path, truth_recipe("ramp", load=ramp, warmup_s=0.5))
    stages = res.result["stages"]
    assert [s["rate"] for s in stages] == pytest.approx([10, 20, 40])
    assert [s["requests"]["total"] for s in stages] == [15, 30, 60]
    assert res.result["requests"]["total"] == 105 and res.result["throughput"]["elapsed_s"] >= 4.5


def test_search_finds_the_capacity_of_a_serial_server(write_recipe, tmp_path):
    # One request at a time, ~25 ms each (ttft 11 + 7 gaps of 2): ~40 req/s is all it can take.
    search = {"mode": "search", "low": 4, "high": 256, "precision": 0.15, "probe_s": 2.5, "arrival": "constant"}
    search["slo"] = ["e2e_ms.p95 < 150"]
    recipe = truth_recipe("cap", "--ttft-ms", "11", "--itl-ms", "2", "--slots", "1", load=search)
    res = _run(write_recipe, tmp_path, recipe)
    found = res.result["search"]
    assert 20 <= found["max_passing"] <= 48, found
    assert found["bracket"][1] / found["max_passing"] - 1 <= 0.15
    assert [p["value"] for p in found["probes"]][:4] == [4, 8, 16, 32]
    assert all(p["passed"] == (not p["failed_slos"] and not p["saturated"]) for p in found["probes"])
    # a serial server past its capacity queues without bound: those probes stopped early
    assert any(p["saturated"] and "requests in flight" in p["stopped"] for p in found["probes"])
    assert res.passed and res.result["load"]["rate"] == found["max_passing"]


def test_repeats_report_confidence_and_pool_the_records(write_recipe, tmp_path):
    res = _run(write_recipe, tmp_path, truth_recipe("rep", repeat=3, duration_s=0.8))
    rep = res.result["repeats"]
    assert rep["n"] == 3 and len(rep["runs"]) == 3
    fig = rep["figures"]["throughput.requests_per_s"]
    assert fig["n"] == 3 and fig["ci_low"] <= fig["mean"] <= fig["ci_high"]
    assert fig["quality"] in ("excellent", "good", "fair", "unstable")
    assert res.result["requests"]["total"] == sum(r["requests"]["total"] for r in rep["runs"])


def test_steady_state_and_client_check_are_in_every_result(write_recipe, tmp_path):
    res = _run(write_recipe, tmp_path, truth_recipe("plain", duration_s=1.0))
    st, client = res.result["steady_state"], res.result["client"]
    assert st["method"] == "MSER-5" and "metrics" in st and st["end_s"] >= 1
    assert client["processes"] == 1 and client["bottleneck"] is False
    assert res.passed


def test_an_overloaded_client_says_so_and_fails_when_strict(write_recipe, tmp_path):
    # 30,000 req/s from one process on a shared 2-core machine: the client cannot keep up.
    wl = {"load": {"mode": "open", "rate": 30000}, "duration_s": 1.5, "stream": False}
    recipe = truth_recipe("flood", "--ttft-ms", "0", "--itl-ms", "0", **wl) | {"strict_client": True, "slo": []}
    res = _run(write_recipe, tmp_path, recipe)
    client = res.result["client"]
    assert client["bottleneck"] is True and client["reasons"]
    (verdict,) = [v for v in res.result["slo"] if v["expression"] == "client is not the bottleneck"]
    assert verdict["passed"] is False and not res.passed


def test_server_tokenizer_required_but_missing_is_a_clear_error(write_recipe, tmp_path):
    recipe = truth_recipe(
        "tok", dataset={"prompt_tokens": 8, "output_tokens": 2, "prompts": 4, "token_counts": "server"}
    )
    with pytest.raises(ServiceError, match="token_counts is 'server' but /tokenize: not answered"):
        _run(write_recipe, tmp_path, recipe)


def _llama(name: str, url: str, load_: dict, **workload: object) -> dict:
    wl: dict = {"protocol": "openai-chat", "model": "tiny", "stream": True, "load": load_, "duration_s": 3.0,
                "warmup_s": 0.5, "dataset": {"prompt_tokens": 32, "output_tokens": 32, "prompts": 64}}  # fmt: skip
    wl.update(workload)
    return {"name": name, "service": {"url": url}, "workload": wl}


def test_knee_of_a_concurrency_sweep_lies_at_the_servers_slot_count(write_recipe, tmp_path):
    from pytest_ubench.metrics import capacity

    # The oracle is the server's configuration, which ubench never sees: 4 slots, ~36 ms per request
    # (TTFT 20 ms + 8 gaps of 2 ms). Throughput doubles up to 4 users and stays flat after, while E2E climbs.
    load_ = {"mode": "closed", "concurrency": [1, 2, 4, 8, 16]}
    recipe = truth_recipe("knee", "--ttft-ms", "20", "--itl-ms", "2", "--slots", "4", load=load_, duration_s=1.5)
    cases = expand(load(write_recipe(recipe)))
    with Services(tmp_path / "out", monitoring=False) as services:
        results = [run_case(c, services).result for c in cases]
    (path,) = capacity.write_sweeps(tmp_path / "out", results)
    sweep = json.loads(path.read_text())
    assert sweep["knee"] is not None and sweep["knee"]["concurrency"] == 4, sweep
    thr = [p["requests_per_s"] for p in sweep["points"]]
    assert thr[2] == pytest.approx(4 / 0.036, rel=0.25) and thr[4] == pytest.approx(thr[2], rel=0.1)


def test_a_concurrency_sweep_on_llamacpp_shows_its_saturation(llama_server, write_recipe, tmp_path):
    from pytest_ubench.metrics import capacity

    recipe = _llama("knee", llama_server.endpoint.url, {"mode": "closed", "concurrency": [1, 2, 4, 8, 16]})
    cases = expand(load(write_recipe(recipe)))
    with Services(tmp_path / "out", monitoring=False) as services:
        results = [run_case(c, services).result for c in cases]
    (path,) = capacity.write_sweeps(tmp_path / "out", results)
    sweep = json.loads(path.read_text())
    points = sweep["points"]
    assert [p["concurrency"] for p in points] == [1, 2, 4, 8, 16]
    # One compute thread: 16 users get far less than 16 times the throughput of one and wait far longer.
    # Where the knee falls is left to the slotted truth server above: on this 2-core VM llama.cpp's
    # throughput moved by up to 30 % between 3 s points (measured over 5 sweeps), enough to shift the knee or
    # hide it, while these ratios held with a wide margin (throughput x0.85-1.3, E2E p50 x12-20).
    assert points[-1]["requests_per_s"] < 4 * points[0]["requests_per_s"], sweep
    assert points[-1]["e2e_p50_ms"] > 4 * points[0]["e2e_p50_ms"], sweep


def _tokens_predicted(url: str) -> float:
    """llama.cpp's own count of the tokens it generated, from its /metrics."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("llamacpp:tokens_predicted_total")
    )


def test_max_rate_under_slo_on_llamacpp(llama_server, write_recipe, tmp_path):
    url = llama_server.endpoint.url
    # The reference is the server's capacity on this host in this run, not a figure from another day: this
    # VM's hypervisor takes 30-50 % of its CPUs under load on some days, and llama.cpp's saturation moved
    # from 70-100 req/s to ~11 between sessions (a fixed range of 16-110 then failed in CI with a right
    # answer). Eight closed users keep its 4 slots full; its own token counter says they were served.
    before = _tokens_predicted(url)
    closed = _run(write_recipe, tmp_path / "capacity", _llama("capacity", url, {"mode": "closed", "concurrency": 8}))
    served = closed.result["requests"]["ok"]
    assert _tokens_predicted(url) - before >= 32 * served > 0
    capacity = closed.result["throughput"]["requests_per_s"]
    search = {"mode": "search", "low": 2, "high": 128, "precision": 0.2, "probe_s": 3.0, "arrival": "constant",
              "slo": ["e2e_ms.p95 < 300"]}  # fmt: skip
    res = _run(write_recipe, tmp_path, _llama("maxrate", url, search, warmup_s=0.3))
    found = res.result["search"]
    # The answer must sit below saturation (with room for the 30 % its throughput moves between 3 s runs
    # here) and above a single slot's share of it.
    assert found["max_passing"] is not None and capacity / 4 <= found["max_passing"] <= 1.5 * capacity, (
        capacity,
        found,
    )
    best = next(p for p in found["probes"] if p["value"] == found["max_passing"])
    assert best["e2e_p95_ms"] < 300 and best["requests_per_s"] > 0.8 * found["max_passing"]


def test_prompts_are_cut_to_exact_tokens_with_the_servers_tokenizer(llama_server, write_recipe, tmp_path):
    ds = {"prompt_tokens": {"dist": "uniform", "min": 8, "max": 40}, "output_tokens": 4, "prompts": 24,
          "token_counts": "server"}  # fmt: skip
    wl = {"protocol": "openai-completions", "dataset": ds, "max_requests": 24, "duration_s": 30.0, "warmup_s": 0}
    recipe = _llama("tok", llama_server.endpoint.url, {"mode": "closed", "concurrency": 2}, **wl)
    (case,) = expand(load(write_recipe(recipe)))
    from pytest_ubench.load.dataset import synthetic
    from pytest_ubench.load.tokenizer import ServerTokenizer
    from pytest_ubench.protocols.prompts import lengths, prompts_for
    from pytest_ubench.session.plans import plan_for

    prompts, info = prompts_for(case, llama_server.endpoint)
    assert info["token_counts"] == "exact (server /tokenize)"
    tok = ServerTokenizer(llama_server.endpoint.url, "tiny")
    d = case.recipe.workload.dataset
    drawn = synthetic(d.prompts, lengths(d.prompt_tokens), lengths(d.output_tokens), d.seed, case.id)
    counts = [len(tok.tokenize(p.text or "")) for p in prompts]
    tok.close()
    assert counts == [len(p.text or "") for p in drawn]  # exactly the drawn lengths, in server tokens
    assert len(set(counts)) > 5
    assert plan_for(case, llama_server.endpoint).dataset["token_counts"].startswith("exact")
    res = _run(write_recipe, tmp_path, recipe)
    records = record_rows(res.run_dir)
    # the server counts what the tokenizer counted (plus a constant: the BOS token)
    offsets = {r["prompt_tokens"] - c for r, c in zip(records, counts, strict=False)}
    assert len(offsets) == 1 and offsets <= {0, 1}


def test_each_repeat_sends_prompts_the_server_has_not_cached(llama_server, write_recipe, tmp_path):
    """``repeat`` (and a baseline's runs) measure the server, not its prompt cache: oracle, llama.cpp's own
    count of prompt tokens it evaluated (cached tokens are not evaluated: a repeated prompt adds ~1)."""
    import httpx

    def evaluated() -> float:
        text = httpx.get(f"{llama_server.endpoint.url}/metrics", timeout=10).text
        return float(re.search(r"^llamacpp:prompt_tokens_total\s+(\S+)", text, re.M).group(1))

    ds = {"prompt_tokens": 96, "output_tokens": 8, "prompts": 4096}
    recipe = _llama("repeats", llama_server.endpoint.url, {"mode": "closed", "concurrency": 2}, dataset=ds,
                    duration_s=1.5, warmup_s=0.2, repeat=3)  # fmt: skip
    before = evaluated()
    res = _run(write_recipe, tmp_path, recipe)
    processed = evaluated() - before
    records = record_rows(res.run_dir)
    sent = sum(r["prompt_tokens"] for r in records if r["error"] is None)
    assert res.result["repeats"]["n"] == 3 and len(records) > 3 * 10
    # Every request's prompt evaluated, but for the chat template's few tokens shared with the prompt before
    # it in the same slot. Repeats replaying the first run's prompts would leave two thirds cached.
    assert processed >= 0.85 * sent, (processed, sent)
