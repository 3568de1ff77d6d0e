"""Every recipe we ship in recipes/ runs here as shipped: the same file, through ``ubenchai client run``,
only its durations shortened with --set. A recipe that breaks (a renamed field, a server flag that changed,
an SLO this machine cannot meet) fails here, not in a user's first run. The MeluXina recipes need a GPU
cluster and Apptainer: test_meluxina.py runs each on the MeluXina-shaped test cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
# Run as shipped by a test of their own, with a stronger oracle than "it runs".
ELSEWHERE = {
    "vllm": "test_vllm.py: one vLLM start, its counters and histograms against the client's",
    "llm-replicas": "test_replicas.py: each replica's counters against the client's, pinning",
    "llm-replicas-nginx": "test_replicas.py: nginx's count per replica against each server's own",
}
SHORT = ["--set", "workload.duration_s=1.5", "--set", "workload.warmup_s=0.5"]
# Other durations, where a recipe has them: a capacity search's probe at each rate.
MORE = {"llm-capacity": ["--set", "workload.load.probe_s=1.5"]}
# What a recipe's comments tell its user to export (secrets come from the environment).
ENV = {"s3": {"UBENCH_S3_ACCESS_KEY": "test", "UBENCH_S3_SECRET_KEY": "test"}}
# Verdicts a recipe is built to give (its comments say why): Milvus' narrowest search misses the recall bar.
FAILS = {"vector-milvus-concurrency=4-ef=10": "recall.mean >= 0.9"}


def test_every_shipped_recipe_is_named_here() -> None:
    assert sorted(p.stem for p in (REPO / "recipes").glob("*.yaml")) == sorted(SHIPPED + list(ELSEWHERE))


def test_the_seed_flow_measures_a_monitored_server_with_its_monitor(tmp_path: Path) -> None:
    """The seed's flow with the shipped recipes: ``server start`` the main job's service twice (A, B),
    ``monitor start --recipe llm-server --targets A,B``, ``client run --target A``, ``monitor metrics``.
    The run reads A's series from that monitor (no Prometheus of its own) while B is loaded beside it.
    Oracle: llama.cpp's own token counter on A, through the monitor, grows by exactly what the client
    counted; B's traffic, in the same Prometheus, must not leak into A's figures."""
    import threading

    import httpx

    out = tmp_path / "o"
    env = os.environ | {"UBENCHAI_STATE_DIR": str(tmp_path / "state")}

    def ubenchai(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest_ubench", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip

    started = [ubenchai("server", "start", "--recipe", "llm-inference", "--output", str(out)) for _ in range(2)]
    ids = [s.stdout.split()[0] for s in started if s.returncode == 0]
    monitor_id = None
    stop = threading.Event()
    try:
        assert len(ids) == 2, [s.stderr for s in started]
        url_b = started[1].stdout.split()[1]
        mon = ubenchai("monitor", "start", "--recipe", "llm-server", "--targets", ",".join(ids), "--output", str(out))
        assert mon.returncode == 0, mon.stderr
        monitor_id, monitor_url = mon.stdout.split()[:2]
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
        sent_b = []

        def load_b() -> None:
            with httpx.Client(timeout=60) as client:
                while not stop.is_set():
                    sent_b.append(client.post(f"{url_b}/v1/chat/completions", json=body).status_code)

        beside = threading.Thread(target=load_b)
        beside.start()
        client_out = tmp_path / "client"
        run = ubenchai("client", "run", "--recipe", "llm-inference", "--target", ids[0], "--output", str(client_out),
                       "--set", "workload.load.concurrency=[2]", *SHORT)  # fmt: skip
        stop.set()
        beside.join()
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert sent_b.count(200) > 5
        (path,) = client_out.glob("*/results.json")
        result = json.loads(path.read_text())
        jsonschema.validate(result, SCHEMA)
        monitoring = result["monitoring"]
        assert monitoring["monitor"] == monitor_id and monitoring["prometheus"] == monitor_url
        assert not (client_out / "prometheus").exists()  # no second Prometheus
        check = monitoring["cross_check"]["llamacpp"]
        assert check["server"] == check["client"] > 0, check
        assert result["server_metrics"]["output_tokens_per_s"]["max"] > 0
        # The monitor is left as it was: scraping A and B only, and still answering.
        targets = sorted(p.name for p in (out / "monitors" / monitor_id / "prometheus" / "targets").glob("*.json"))
        assert len(targets) == 2 and all(any(i in t for i in ids) for t in targets), targets
        series = json.loads(ubenchai("monitor", "metrics", monitor_id).stdout)["queries"]
        assert series["output_tokens_per_s"]["max"] > 0, series
    finally:
        stop.set()
        if monitor_id is not None:
            ubenchai("monitor", "stop", monitor_id)
        for service_id in ids:
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
