"""Server-side metrics from a real Prometheus that the harness deploys beside the service."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from helpers import LLAMA, pid_alive, service_pid, truth_recipe

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def prometheus_installed():
    assert shutil.which("prometheus"), (
        "Prometheus is needed: ci/install-services installs it (apt-get install prometheus)"
    )


def ubenchai(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_ubench", *args], capture_output=True, text=True, timeout=180,
                          env=env, cwd=cwd)  # fmt: skip


def llama_recipe(**over: object) -> dict:
    data = {
        "name": "mon",
        "service": {"command": LLAMA, "metrics_path": "/metrics", "health": {"timeout_s": 60}},
        "workload": {
            "model": "tiny",
            "dataset": {"prompt_tokens": 32, "output_tokens": 32},
            "load": {"mode": "closed", "concurrency": 3},
            "duration_s": 4.0,
            "warmup_s": 1.0,
        },
        "monitor": {"query_sets": ["llamacpp", "node"], "queries": {"slots_busy": "llamacpp:requests_processing"}},
        "slo": ["error_rate < 0.01", "server.slots_busy.max <= 3", "server.output_tokens_per_s.mean > 1"],
    }
    data.update(over)
    return data


def test_results_carry_the_servers_series_and_they_agree_with_the_client(write_recipe, tmp_path):
    # A relative results directory, as the README's main job uses (Prometheus must still find its targets).
    res = ubenchai("client", "run", "--recipe", str(write_recipe(llama_recipe())), "--output", "o", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASS server.slots_busy.max <= 3: measured 3" in res.stdout
    data = json.loads((tmp_path / "o" / "mon-concurrency=3" / "results.json").read_text())
    jsonschema.validate(data, json.loads((Path(__file__).parents[2] / "docs" / "results-schema.json").read_text()))
    metrics = data["server_metrics"]
    assert set(metrics) >= {"slots_busy", "requests_processing", "output_tokens_per_s", "prompt_tokens_per_s"}
    for name in ("slots_busy", "output_tokens_per_s"):
        assert len(metrics[name]["series"]) >= 3 and metrics[name]["max"] > 0
    start, end = data["monitoring"]["window"]
    # exactly the case's window (timestamps are rounded to the millisecond)
    assert all(start - 0.001 <= t <= end + 0.001 for t, _ in metrics["slots_busy"]["series"])
    check = data["monitoring"]["cross_check"]["llamacpp"]
    assert check["client"] > 0 and check["relative_difference"] <= 0.01
    assert data["monitoring"]["complete"] is True
    # The node exporter the harness started on the service's host: the machine's side of the story.
    assert 0 < metrics["cpu_busy"]["max"] <= 1 and metrics["memory_used_bytes"]["min"] > 0
    # Nothing left running: neither the service, nor Prometheus, nor the node exporter.
    for d in ("services/mon", "prometheus", "node-exporter/local"):
        assert not pid_alive(json.loads((tmp_path / "o" / d / "endpoint.json").read_text())["pid"])


def test_server_slo_fails_with_measured_vs_allowed(write_recipe, tmp_path):
    recipe = llama_recipe(slo=["server.slots_busy.max < 2"])
    res = ubenchai("client", "run", "--recipe", str(write_recipe(recipe)), "--output", str(tmp_path / "o"))
    assert res.returncode == 1
    assert "FAIL server.slots_busy.max < 2: measured 3, allowed < 2" in res.stdout


def test_unknown_server_metric_is_a_recipe_error(write_recipe):
    path = write_recipe(llama_recipe(slo=["error_rate < 0.1", "server.kv_cache.max < 0.9"]))
    res = ubenchai("recipe", "validate", str(path))
    assert res.returncode == 2
    assert f"{path}:" in res.stderr and "slo[1]: unknown server metric 'kv_cache'" in res.stderr


def test_a_target_that_never_comes_up_is_named(write_recipe, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    data = truth_recipe("deadtarget")
    data["monitor"] = {"targets": [dead], "target_timeout_s": 4}
    res = ubenchai("client", "run", "--recipe", str(write_recipe(data)), "--output", str(tmp_path / "o"))
    assert res.returncode == 3
    assert f"monitoring: target deadtarget-{dead} ({dead}) not scraped within 4 s" in res.stderr
    assert "Traceback" not in res.stderr
    for d in ("services/deadtarget", "prometheus"):
        assert not pid_alive(json.loads((tmp_path / "o" / d / "endpoint.json").read_text())["pid"])


def test_prometheus_killed_mid_run_leaves_the_run_whole(write_recipe, tmp_path):
    data = llama_recipe(slo=["error_rate < 0.01"])
    data["workload"]["duration_s"] = 6.0
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe",
                             str(write_recipe(data)), "--output", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    pid = service_pid(out / "prometheus" / "endpoint.json")
    deadline = time.monotonic() + 60
    while not (out / "mon-concurrency=3").exists() and time.monotonic() < deadline:  # load has started
        time.sleep(0.1)
    time.sleep(2.0)
    os.kill(pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    result = json.loads((out / "mon-concurrency=3" / "results.json").read_text())
    assert result["monitoring"]["complete"] is False
    assert "Prometheus exited during the run" in result["monitoring"]["note"]
    assert result["requests"]["ok"] > 0


def test_without_prometheus_the_run_says_so_and_goes_on(write_recipe, tmp_path):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable))  # a PATH without prometheus
    res = ubenchai("client", "run", "--recipe", str(write_recipe(llama_recipe(slo=["error_rate < 0.01"]))),
                   "--output", str(tmp_path / "o"), env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("no 'prometheus' binary on PATH") == 1
    result = json.loads((tmp_path / "o" / "mon-concurrency=3" / "results.json").read_text())
    assert "server_metrics" not in result
    assert "no 'prometheus' binary" in result["monitoring"]["note"]


def test_every_dashboard_panel_returns_data_from_the_runs_prometheus(write_recipe, tmp_path):
    from grafana_foundation_sdk.models.dashboard import Dashboard

    from pytest_ubench import Services, expand, run_case
    from pytest_ubench import load_recipe as load
    from pytest_ubench.metrics.server_queries import CLIENT
    from pytest_ubench.monitor.grafana import panel_queries

    (case,) = expand(load(write_recipe(llama_recipe())))
    root = tmp_path / "run"
    with Services(root) as services:
        result = run_case(case, services)
        prom = services.prometheus
        assert prom is not None
        (dash_file,) = (root / "grafana" / "dashboards").glob("*.json")
        dash = json.loads(dash_file.read_text())
        Dashboard.from_json(dash)  # the SDK's typed model accepts it back
        datasource = (root / "grafana" / "provisioning" / "datasources" / "ubench.yaml").read_text()
        assert f"url: {prom.url}" in datasource
        start, end = result.result["monitoring"]["window"]
        panels = panel_queries(dash)
        assert len(panels) == len(result.result["server_metrics"]) + len(CLIENT)  # + the load client's row
        for title, expr in panels:
            query = expr.replace("$__rate_interval", "4s")  # what Grafana substitutes at a 1 s scrape interval
            assert prom.range_series(query, start, end), f"panel {title!r}: {query} returned no data"


def test_monitor_commands_watch_a_running_server(write_recipe, tmp_path):
    env = dict(os.environ, UBENCHAI_STATE_DIR=str(tmp_path / "state"))
    recipe = write_recipe(llama_recipe())
    monitors = tmp_path / "recipes" / "monitors"
    monitors.mkdir()
    (monitors / "watch.yaml").write_text("name: watch\nquery_sets: [llamacpp]\nqueries: {up_now: up}\n")
    env["UBENCHAI_CONFIG_DIR"] = str(tmp_path / "recipes")
    out = str(tmp_path / "o")
    service_id, url = ubenchai("server", "start", "--recipe", str(recipe), "--output", out, env=env).stdout.split()
    monitor_id = None
    try:
        missing = ubenchai("monitor", "start", "--recipe", "watch", "--targets", "nope", env=env)
        assert missing.returncode == 2 and "no service 'nope'" in missing.stderr
        started = ubenchai("monitor", "start", "--recipe", "watch", "--targets", service_id, "--output", out, env=env)
        assert started.returncode == 0, started.stderr
        monitor_id, prom_url = started.stdout.split()
        listing = ubenchai("monitor", "list", env=env).stdout
        assert monitor_id in listing and service_id in listing and "running" in listing
        load = ubenchai("client", "run", "--recipe", str(recipe), "--target", url, "--output", str(tmp_path / "r"),
                        env=env)  # fmt: skip
        assert load.returncode == 0, load.stderr
        metrics = json.loads(ubenchai("monitor", "metrics", monitor_id, env=env).stdout)
        assert metrics["prometheus"] == prom_url and metrics["targets"] == [service_id]
        assert metrics["queries"]["up_now"]["max"] == 1.0
        assert metrics["queries"]["requests_processing"]["max"] == 3  # the client's concurrency, seen server-side
        csv_file = tmp_path / "m.csv"
        assert ubenchai("monitor", "metrics", monitor_id, "--format", "csv", "--output", str(csv_file),
                        env=env).returncode == 0  # fmt: skip
        assert csv_file.read_text().startswith("query,timestamp,value\n") and "\nup_now," in csv_file.read_text()
        report = json.loads(ubenchai("monitor", "report", monitor_id, env=env).stdout)
        assert "series" not in report["queries"]["up_now"] and report["queries"]["up_now"]["last"] == 1.0
        page = tmp_path / "monitor.html"
        html_report = ubenchai("monitor", "report", monitor_id, "--format", "html", "--output", str(page), env=env)
        assert html_report.returncode == 0, html_report.stderr
        text = page.read_text()
        assert text.count("<svg") == 1 and "<td>up_now</td>" in text and "default-src 'none'" in text
        prom_pid = json.loads((tmp_path / "state" / "services" / f"{monitor_id}.json").read_text())["endpoint"]["pid"]
        assert ubenchai("monitor", "stop", monitor_id, env=env).returncode == 0
        assert not pid_alive(prom_pid)
        assert monitor_id not in ubenchai("monitor", "list", env=env).stdout
    finally:
        if monitor_id is not None:  # a failed assertion above must not leave Prometheus running
            ubenchai("monitor", "stop", monitor_id, env=env)
        ubenchai("server", "stop", service_id, env=env)
