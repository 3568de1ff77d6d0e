"""Every recipe we ship in recipes/ runs here as shipped: the same file, through ``ubenchai client run``,
only its durations shortened with --set. A recipe that breaks (a renamed field, a server flag that changed,
an SLO this machine cannot meet) fails here, not in a user's first run. The MeluXina recipes need a GPU
cluster and Apptainer: their Slurm path is tested in test_slurm.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from helpers import SCHEMA

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# Named one by one (recipes/<name>.yaml), and checked against the directory: a new recipe fails the check
# below until it is named here, and so run.
SHIPPED = ["embeddings", "fio", "grpc", "http-endpoint", "kserve-v2", "llm-capacity", "llm-inference", "postgres",
           "redis", "s3", "vector-chroma", "vector-milvus"]  # fmt: skip
SHORT = ["--set", "workload.duration_s=1.5", "--set", "workload.warmup_s=0.5"]
# Other durations, where a recipe has them: a capacity search's probe at each rate.
MORE = {"llm-capacity": ["--set", "workload.load.probe_s=1.5"]}
# What a recipe's comments tell its user to export (secrets come from the environment).
ENV = {"s3": {"UBENCH_S3_ACCESS_KEY": "test", "UBENCH_S3_SECRET_KEY": "test"}}
# Verdicts a recipe is built to give (its comments say why): Milvus' narrowest search misses the recall bar.
FAILS = {"vector-milvus-concurrency=4-ef=10": "recall.mean >= 0.9"}


def test_every_shipped_recipe_is_named_here() -> None:
    assert sorted(p.stem for p in (REPO / "recipes").glob("*.yaml")) == SHIPPED


def test_the_shipped_monitor_recipe_watches_a_running_server(tmp_path: Path) -> None:
    """recipes/monitors/llm-server.yaml as the seed's flow uses it: ``server start`` (the shipped main job's
    service), ``monitor start --recipe llm-server --targets ID``, ``monitor metrics``. Oracle: llama.cpp's
    own token counter, scraped through that Prometheus, grows with the requests we send."""
    import httpx

    env = os.environ | {"UBENCHAI_STATE_DIR": str(tmp_path / "state")}

    def ubenchai(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest_ubench", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip

    started = ubenchai("server", "start", "--recipe", "llm-inference", "--output", str(tmp_path / "o"))
    assert started.returncode == 0, started.stderr
    service_id, url = started.stdout.split()[:2]
    monitor_id = None
    try:
        mon = ubenchai("monitor", "start", "--recipe", "llm-server", "--targets", service_id, "--output",
                       str(tmp_path / "o"))  # fmt: skip
        assert mon.returncode == 0, mon.stderr
        monitor_id = mon.stdout.split()[0]
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
        for _ in range(5):
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).raise_for_status()
        time.sleep(3)  # a few 1 s scrapes
        series = json.loads(ubenchai("monitor", "metrics", monitor_id).stdout)["queries"]
        generated = [q for q in series.values() if "tokens" in q["query"] and (q["max"] or 0) > 0]
        assert generated, sorted(series)
    finally:
        if monitor_id is not None:
            ubenchai("monitor", "stop", monitor_id)
        ubenchai("server", "stop", service_id)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_runs_as_shipped(name: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(REPO / "recipes" / f"{name}.yaml"),
           "--output", str(out), *SHORT, *MORE.get(name, [])]  # fmt: skip
    env = os.environ | ENV.get(name, {})
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    results = sorted(out.glob("*/results.json"))
    expected = 1 if any(p.parent.name in FAILS for p in results) else 0  # 1: an SLO failed, as it should
    assert done.returncode == expected, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert results, done.stdout
    for path in results:
        result = json.loads(path.read_text())
        jsonschema.validate(result, SCHEMA)
        ops = result.get("ops") or {}
        worked = result["requests"]["ok"] > 0 or any(o.get("per_s", 0) > 0 for o in ops.values())  # fio: its ops
        failed = [v["expression"] for v in result["slo"] if not v["passed"]]
        assert worked and failed == ([FAILS[path.parent.name]] if path.parent.name in FAILS else []), (
            path.parent.name,
            result["requests"],
            failed,
        )
