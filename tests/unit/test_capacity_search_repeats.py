"""Sweep knee, max-load-under-SLO search, repeat statistics, exact merge of client processes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from pytest_ubench.load import engine, parallel
from pytest_ubench.metrics import capacity, repeats, search, stats
from pytest_ubench.metrics.columns import Records
from pytest_ubench.metrics.records import Record


def test_knee_needs_flat_throughput_and_climbing_latency():
    thr = [10, 19, 36, 38, 39]
    lat = [100, 105, 110, 200, 400]
    assert capacity.knee(thr, lat) == 2
    assert capacity.knee(thr, [100, 100, 100, 100, 100]) is None  # flat but latency steady: not saturated
    assert capacity.knee([10, 20, 40, 80]) is None
    # one flat, noisy step early on is not saturation when throughput grows again after it
    assert capacity.knee([45, 46.6, 70.1, 69.1, 61.5], [21, 35, 51, 96, 243]) == 2


def _result(name: str, conc: int, rps: float, e2e: float) -> dict:
    m = {"p50": e2e, "p95": e2e * 1.5}
    return {"case_id": f"{name}-c{conc}", "recipe": {"name": name}, "load": {"mode": "closed", "concurrency": conc},
            "throughput": {"requests_per_s": rps, "output_tokens_per_s": rps * 10},
            "metrics": {"ttft_ms": m, "e2e_ms": m}, "passed": True}  # fmt: skip


def test_sweep_summary_is_written_per_recipe(tmp_path):
    results = [_result("a", c, r, e) for c, r, e in [(8, 40, 200), (1, 10, 100), (4, 38, 105), (2, 20, 100)]]
    results.append(_result("single", 1, 5, 10))
    paths = capacity.write_sweeps(tmp_path, results)
    assert [p.name for p in paths] == ["a.json"]
    import json

    summary = json.loads(paths[0].read_text())
    assert [p["concurrency"] for p in summary["points"]] == [1, 2, 4, 8]
    assert summary["knee"] == {"index": 2, "concurrency": 4, "requests_per_s": 38}


def test_search_brackets_then_bisects_to_the_precision():
    capacity_true = 37.3
    seen = []

    def probe(v: float) -> search.Probe:
        seen.append(v)
        return search.Probe(v, v <= capacity_true)

    found = search.find_max(probe, "rate", 1, 256, 0.05, integer=False)
    assert found.best is not None and found.best <= capacity_true
    assert (found.bracket[1] - found.best) / found.best <= 0.05
    assert seen[:7] == [1, 2, 4, 8, 16, 32, 64]  # doubling stops at the first failure
    assert len(seen) <= 7 + 5
    ints = search.find_max(lambda v: search.Probe(v, v <= 13), "concurrency", 1, 64, 0.01, integer=True)
    assert ints.best == 13 and ints.bracket == (13, 14)


def test_search_reports_the_edges():
    none = search.find_max(lambda v: search.Probe(v, False), "rate", 2, 64, 0.1, integer=False)
    assert none.best is None and "even the lowest load" in none.note and len(none.probes) == 1
    top = search.find_max(lambda v: search.Probe(v, True), "rate", 2, 50, 0.1, integer=False)
    assert top.best == 50 and "raise 'high'" in top.note


def test_confidence_interval_is_students_t():
    vals = [10.0, 12.0, 11.0, 13.0, 9.0]
    got = repeats.confidence(vals)
    lo, hi = sps.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=sps.sem(vals))
    assert got["ci_low"] == pytest.approx(lo) and got["ci_high"] == pytest.approx(hi)
    assert got["cv"] == pytest.approx(np.std(vals, ddof=1) / 11.0)
    assert got["quality"] == "fair"
    assert repeats.quality(0.03) == "excellent" and repeats.quality(0.3) == "unstable"
    assert repeats.confidence([5.0])["ci_low"] is None


def _recs(rng: np.random.Generator, n: int, offset: float) -> list[Record]:
    out = []
    for i in range(n):
        r = Record(offset + i * 0.01)
        r.start = r.intended + rng.uniform(0, 1e-4)
        r.chunks = list(r.start + np.cumsum(rng.uniform(0.001, 0.02, 5)))
        r.first, r.end = r.chunks[0], r.chunks[-1] + 0.001
        r.status, r.output_tokens, r.tokens_from = 200, 5, "usage"
        out.append(r)
    return out


def test_merged_processes_give_exactly_the_single_process_figures():
    rng = np.random.default_rng(4)
    every = _recs(rng, 900, 100.0)
    runs = [engine.Run(Records.of(every[i::3], 100.0), 100.0, 5.0, 100.0, 109.0, wall_t1=9.0) for i in range(3)]
    merged = parallel.merge(runs, engine.LoadPlan([b""], True, "open"))
    assert len(merged.records) == len(every)
    one = stats.summary(Records.of(every, 100.0), 100.0, 109.0)
    both = stats.summary(merged.measured, merged.window_start, merged.window_end)
    assert both == one


def test_task_plans_add_up():
    plan = engine.LoadPlan([b"a", b"b"], False, "closed", concurrency=7, max_requests=10)
    parts = [parallel.task_plan(plan, i, 3) for i in range(3)]
    assert [p.concurrency for p in parts] == [3, 2, 2] and sum(p.max_requests or 0 for p in parts) == 10
    open_plan = engine.LoadPlan([b"a"], False, "open", rate=200, duration_s=2, max_in_flight=10)
    whole = engine.schedule_of(open_plan)
    dealt = [parallel.task_plan(open_plan, i, 4) for i in range(4)]
    assert sum(len(engine.schedule_of(p)) for p in dealt) == len(whole)
    assert sum(p.max_in_flight or 0 for p in dealt) == 10


def test_pooled_repeats_sum_the_windows():
    rng = np.random.default_rng(5)
    a, b = _recs(rng, 100, 0.0), _recs(rng, 300, 50.0)
    ra, rb = Records.of(a), Records.of(b)
    sa, sb = stats.summary(ra, 0.0, 1.0), stats.summary(rb, 50.0, 53.0)
    pooled = stats.pooled([sa, sb], Records.concat([ra, rb]))
    assert pooled["requests"]["ok"] == 400
    elapsed = sa["throughput"]["elapsed_s"] + sb["throughput"]["elapsed_s"]
    assert math.isclose(pooled["throughput"]["requests_per_s"], 400 / elapsed)
    assert pooled["metrics"]["e2e_ms"]["count"] == 400
