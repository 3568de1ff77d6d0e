"""Ollama's native API against a test double: Ollama cannot run here (no model registry, no GPU), so the
truth server speaks /api/chat and /api/generate as Ollama does and records when it wrote every token."""

from __future__ import annotations

import itertools
import json
import statistics
import urllib.request
from pathlib import Path

import jsonschema
import pytest
from helpers import TRUTH, record_rows

from pytest_ubench import Services, expand, run_case
from pytest_ubench import load_recipe as load

pytestmark = pytest.mark.integration
SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "results-schema.json").read_text())


def _recipe(protocol: str, stream: bool) -> dict:
    return {
        "name": protocol,
        "service": {"command": [*TRUTH, "--ttft-ms", "30", "--itl-ms", "6"]},
        "workload": {"protocol": protocol, "model": "llama3.2:3b", "stream": stream,
                     "dataset": {"prompt_tokens": 16, "output_tokens": 12, "prompts": 8, "token_counts": "approximate"},
                     "load": {"mode": "closed", "concurrency": 4}, "duration_s": 1.5, "warmup_s": 0.3},
        "slo": ["error_rate < 0.01", "server_reported.client_vs_server > 0.8"],
    }  # fmt: skip


def test_ollama_chat_stream_timed_against_the_servers_clock(write_recipe, tmp_path):
    (case,) = expand(load(write_recipe(_recipe("ollama-chat", True))))
    with Services(tmp_path / "out", monitoring=False) as services:
        res = run_case(case, services)
        url = services.get(case).endpoint.url
        truth = json.load(urllib.request.urlopen(url + "/truth"))
    jsonschema.validate(res.result, SCHEMA)
    r = res.result
    assert r["requests"]["ok"] > 10 and r["requests"]["failed"] == 0
    assert r["requests"]["output_tokens_from"] == {"usage": r["requests"]["ok"]}  # eval_count, not counted chunks
    records = record_rows(res.run_dir)
    assert all(x["output_tokens"] == 12 and len(x["chunk_us"]) == 12 for x in records if x["error"] is None)
    true_ttft = statistics.median((t["writes"][0] - t["received"]) * 1000 for t in truth)
    true_itl = statistics.median((b - a) * 1000 for t in truth for a, b in itertools.pairwise(t["writes"]))
    assert 0 <= r["metrics"]["ttft_ms"]["p50"] - true_ttft < 3.0
    assert abs(r["metrics"]["itl_ms"]["p50"] - true_itl) < 0.5
    rep = r["server_reported"]  # the double reports 12 tokens in 12 x 6 ms: 166.7 tokens/s
    assert rep["decode_tokens_per_s"] == pytest.approx(1000 / 6, rel=0.01)
    assert 0.8 < rep["client_vs_server"] < 1.1 and res.passed


def test_ollama_generate_unstreamed_takes_counts_from_the_reply(write_recipe, tmp_path):
    recipe = _recipe("ollama-generate", False)
    recipe["slo"] = ["error_rate < 0.01"]
    (case,) = expand(load(write_recipe(recipe)))
    with Services(tmp_path / "out", monitoring=False) as services:
        res = run_case(case, services)
    r = res.result
    assert r["requests"]["ok"] > 5 and r["metrics"]["ttft_ms"]["count"] == 0
    assert r["throughput"]["output_tokens_per_s"] == pytest.approx(12 * r["throughput"]["requests_per_s"])
    assert r["server_reported"]["client_decode_tokens_per_s"] is None  # one reply: no client-side decode rate
    assert r["metrics"]["e2e_ms"]["min"] >= 30 + 11 * 6
