"""A real vLLM (the CPU build, in its own venv) serving the generated model, with a real Prometheus beside it.

The shipped recipe runs as shipped (durations shortened). The oracles are vLLM's own: its counters must
grow by exactly the requests and tokens the client counted, its latency histograms' means must agree with
the client's within the documented margin, and every query of the ``vllm`` set and every dashboard panel
must return data from the live series. One vLLM start (~35-50 s on 2 cores) serves the whole test.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import jsonschema
import pytest
from helpers import SCHEMA, record_rows

from pytest_ubench import Services, expand, load_recipe, run_case
from pytest_ubench.metrics import server_queries
from pytest_ubench.monitor.grafana import panel_queries
from pytest_ubench.recipes.loader import setting
from pytest_ubench.servers.vllm import vllm_python

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def vllm_installed() -> None:
    assert vllm_python(), "vLLM is needed: python -m pytest_ubench.servers.vllm --install (ci/test runs it)"


def test_the_vllm_recipe_as_shipped_agrees_with_the_servers_own_account(tmp_path: Path) -> None:
    short = [setting(s, "--set") for s in ("workload.duration_s=4", "workload.warmup_s=1",
                                           "workload.load.concurrency=[4, 16]")]  # fmt: skip
    cases = expand(load_recipe(REPO / "recipes" / "vllm.yaml", settings=short))
    root = tmp_path / "run"
    with Services(root) as services:
        done = [run_case(case, services) for case in cases]
        results = [d.result for d in done]
        prom = services.prometheus
        assert prom is not None
        # service.api_key_env: vLLM read this deployment's key from VLLM_API_KEY, so without it: 401
        dep = services.get(cases[0])
        assert dep.endpoint.key_file is not None
        chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert httpx.post(dep.endpoint.url + "/v1/chat/completions", json=chat, timeout=30).status_code == 401
        # Every panel of the dashboard (the vllm set, the node set, the load client) on the live series.
        (dash_file,) = (root / "grafana" / "dashboards").glob("*.json")
        start, end = results[-1]["monitoring"]["window"]
        for title, expr in panel_queries(json.loads(dash_file.read_text())):
            query = expr.replace("$__rate_interval", "4s")
            assert prom.range_series(query, start, end), f"panel {title!r}: {query} returned no data"
    for case_result, result in zip(done, results, strict=True):
        jsonschema.validate(result, SCHEMA)
        assert result["requests"]["failed"] == 0 and result["requests"]["ok"] > 0
        # ignore_eos: every request yields exactly max_tokens, whatever the random weights sample
        records = record_rows(case_result.run_dir)
        assert {r["output_tokens"] for r in records} == {64}
        series = result["server_metrics"]
        assert set(series) >= set(server_queries.QUERY_SETS["vllm"]), sorted(series)
        empty = [name for name in server_queries.QUERY_SETS["vllm"] if not series[name]["series"]]
        assert not empty, f"queries without data: {empty}"
        checks = result["monitoring"]["cross_check"]
        assert set(checks) == {c.name for c in server_queries.CROSS_CHECKS["vllm"]}
        for name, check in checks.items():
            assert check["agrees"] is True, (result["case_id"], name, check)
        assert checks["vllm.output_tokens"]["server"] == 64 * checks["vllm"]["server"]
        assert all(v["passed"] for v in result["slo"]), result["slo"]
