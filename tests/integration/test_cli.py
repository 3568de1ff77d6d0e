"""``ubenchai`` end to end: real services started by the harness, real exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from helpers import pid_alive, record_rows, service_pid, truth_recipe

from conftest import start
from pytest_ubench.orchestrators.local import LocalOrchestrator

pytestmark = pytest.mark.integration

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "results-schema.json").read_text())


def ubenchai(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_ubench", *args], capture_output=True, text=True, timeout=timeout
    )


def validate(path: Path) -> dict:
    data = json.loads(path.read_text())
    jsonschema.validate(data, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return data


def test_version_and_help():
    assert ubenchai("--version").stdout.startswith("ubenchai ")
    out = ubenchai("--help").stdout
    assert "recipe" in out and "client" in out and "--verbose" in out


def test_validate_reports_every_problem_on_one_line_each(write_recipe):
    bad = write_recipe(
        "name: x\nservice: {url: 'http://127.0.0.1:1'}\nworkload:\n  load: {mode: open, rate: -3}\n"
        "slo: ['ttft_ms.p95 < 1', 'nonsense']\n"
    )
    res = ubenchai("recipe", "validate", str(bad))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert f"{bad}:4: workload.load.rate: input should be greater than 0, got -3" in res.stderr
    assert f"{bad}:5: slo[1]: cannot parse SLO 'nonsense'" in res.stderr


def test_client_run_passes_and_writes_valid_results(write_recipe, tmp_path):
    recipe = write_recipe(truth_recipe("ok", load={"mode": "closed", "concurrency": [1, 2]}))
    res = ubenchai("client", "run", "--recipe", str(recipe), "--output", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    assert "PASS error_rate < 0.01: measured 0" in res.stdout
    for case in ("ok-concurrency=1", "ok-concurrency=2"):
        data = validate(tmp_path / "out" / case / "results.json")
        assert data["passed"] and data["requests"]["ok"] > 0
        rows = record_rows(tmp_path / "out" / case)
        assert len(rows) == data["requests"]["total"] + data["load"]["warmup_requests"]
    endpoint = json.loads((tmp_path / "out" / "services" / "ok" / "endpoint.json").read_text())
    assert not pid_alive(endpoint["pid"])


def test_failing_slo_exits_1_with_measured_and_allowed(write_recipe, tmp_path):
    data = truth_recipe("slow")
    data["slo"] = ["ttft_ms.p50 < 0.001", "error_rate < 0.5"]
    res = ubenchai("client", "run", "--recipe", str(write_recipe(data)), "--output", str(tmp_path / "o"))
    assert res.returncode == 1
    assert "FAIL ttft_ms.p50 < 0.001: measured" in res.stdout and "allowed < 0.001" in res.stdout
    assert "PASS error_rate < 0.5" in res.stdout


def test_dead_port_exits_3(write_recipe, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = ubenchai(
        "client",
        "run",
        "--recipe",
        str(write_recipe(truth_recipe())),
        "--target",
        f"http://127.0.0.1:{port}",
        "--output",
        str(tmp_path / "o"),
    )
    assert res.returncode == 3
    assert f"cannot reach http://127.0.0.1:{port}" in res.stderr and "Connection refused" in res.stderr
    assert "Traceback" not in res.stderr


def test_service_dying_mid_run_exits_3_and_keeps_results(write_recipe, tmp_path):
    recipe = write_recipe(truth_recipe("dies", "--die-after", "20", duration_s=60.0, warmup_s=0))
    started = time.monotonic()
    res = ubenchai("client", "run", "--recipe", str(recipe), "--output", str(tmp_path / "o"))
    assert res.returncode == 3, res.stdout + res.stderr
    assert time.monotonic() - started < 30  # the run stops once the target is gone, not after 60 s
    assert "service dies exited (code 3) during the run" in res.stderr
    data = validate(tmp_path / "o" / "dies-concurrency=2" / "results.json")
    assert not data["passed"] and data["requests"]["ok"] in (19, 20)
    assert data["requests"]["errors"].get("connect", 0) >= 50
    assert data["aborted"].startswith("target unreachable: 50 connection attempts in a row failed")
    assert data["service_failure"]


def test_broken_service_fails_with_its_log(write_recipe, tmp_path):
    data = truth_recipe("broken")
    data["service"]["command"] = [sys.executable, "-c", "import sys; sys.exit('weights file is truncated')"]
    res = ubenchai("client", "run", "--recipe", str(write_recipe(data)), "--output", str(tmp_path / "o"))
    assert res.returncode == 3
    assert "exited with code 1 before becoming healthy" in res.stderr
    assert "weights file is truncated" in res.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_the_service_and_keeps_partial_results(write_recipe, tmp_path, sig):
    recipe = write_recipe(truth_recipe("long", duration_s=60.0))
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(recipe), "--output", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid = service_pid(out / "services" / "long" / "endpoint.json")
    time.sleep(2.0)  # let load run
    assert pid_alive(pid)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not pid_alive(pid)
    data = validate(out / "long-concurrency=2" / "results.json")
    assert data["aborted"] == "interrupted" and data["requests"]["ok"] > 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs (a real full disk) needs root")
def test_full_disk_is_a_clear_error_and_leaves_no_partial_file(write_recipe, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(disk)], check=True)
    try:
        recipe = write_recipe(truth_recipe("full", duration_s=2.0, dataset={"prompt_tokens": 8, "output_tokens": 64}))
        res = ubenchai("client", "run", "--recipe", str(recipe), "--output", str(disk / "out"))
        assert res.returncode == 4, res.stderr
        assert "cannot write results to" in res.stderr and "No space left on device" in res.stderr
        assert "Traceback" not in res.stderr
        case = disk / "out" / "full-concurrency=2"
        assert not list(case.glob("*.tmp*"))  # no partial file left behind
        validate(case / "results.json")  # what fitted was written whole
        endpoint = json.loads((disk / "out" / "services" / "full" / "endpoint.json").read_text())
        assert not pid_alive(endpoint["pid"])
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_secrets_stay_out_of_results_logs_and_records(write_recipe, tmp_path, monkeypatch):
    secret = "s3cret-token-do-not-leak"
    data = truth_recipe("secret", api_key_env="UB_TEST_SECRET")
    data["service"]["env"] = {"UPSTREAM_TOKEN": "${UB_TEST_SECRET}"}
    recipe = write_recipe(data)
    env = dict(os.environ, UB_TEST_SECRET=secret, UBENCHAI_LOG_DIR=str(tmp_path / "logs"))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_ubench",
            "-v",
            "client",
            "run",
            "--recipe",
            str(recipe),
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert secret not in res.stdout + res.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "results.json" for p in files) and any(p.suffix == ".log" for p in files)
    for path in files:
        assert secret not in path.read_text(errors="replace"), path


def test_server_start_list_status_stop(write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("UBENCHAI_STATE_DIR", str(tmp_path / "state"))
    recipe = write_recipe(truth_recipe("svc"))
    res = ubenchai("server", "start", "--recipe", str(recipe), "--output", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    service_id, url = res.stdout.split()
    entry = json.loads((tmp_path / "state" / "services" / f"{service_id}.json").read_text())
    pid = entry["endpoint"]["pid"]
    try:
        assert pid_alive(pid)  # outlives the command that started it
        listing = ubenchai("server", "list").stdout
        assert service_id in listing and "running" in listing
        status = ubenchai("server", "status", service_id)
        assert status.returncode == 0 and "running, health ok" in status.stdout
        run = ubenchai("client", "run", "--recipe", str(recipe), "--target", url, "--output", str(tmp_path / "r"))
        assert run.returncode == 0, run.stderr
    finally:
        stop = ubenchai("server", "stop", service_id)
    assert stop.returncode == 0 and f"stopped {service_id}" in stop.stdout
    assert not pid_alive(pid)
    assert service_id not in ubenchai("server", "list").stdout
    missing = ubenchai("server", "status", service_id)
    assert missing.returncode == 2 and "no service" in missing.stderr


def test_server_status_reports_a_dead_service(write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("UBENCHAI_STATE_DIR", str(tmp_path / "state"))
    res = ubenchai(
        "server", "start", "--recipe", str(write_recipe(truth_recipe("svc"))), "--output", str(tmp_path / "out")
    )
    service_id = res.stdout.split()[0]
    pid = json.loads((tmp_path / "state" / "services" / f"{service_id}.json").read_text())["endpoint"]["pid"]
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    status = ubenchai("server", "status", service_id)
    assert status.returncode == 3 and "failed" in status.stdout
    assert ubenchai("server", "stop", service_id).returncode == 0


def test_https_service_and_target(write_recipe, tmp_path, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    data = truth_recipe("tls")
    data["service"]["command"] += ["--tls-cert", str(cert), "--tls-key", str(key)]
    data["service"]["tls"] = True
    recipe = write_recipe(data)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    # The harness starts the HTTPS service (health check over TLS) and benchmarks it ...
    started = ubenchai("client", "run", "--recipe", str(recipe), "--output", str(tmp_path / "s"))
    assert started.returncode == 0, started.stderr
    assert validate(tmp_path / "s" / "tls-concurrency=2" / "results.json")["endpoint"].startswith("https://")
    # ... and benchmarks one that is already running, given as an https:// target.
    dep = start(data["service"]["command"], tmp_path / "svc", tls=True)
    url = dep.endpoint.url
    try:
        ok = ubenchai("client", "run", "--recipe", str(recipe), "--target", url, "--output", str(tmp_path / "o"))
        assert ok.returncode == 0, ok.stderr
        result = validate(tmp_path / "o" / "tls-concurrency=2" / "results.json")
        assert result["endpoint"] == url and result["requests"]["ok"] > 0 and result["requests"]["failed"] == 0
        # Without trusting the certificate, the target is refused, not silently accepted.
        monkeypatch.delenv("SSL_CERT_FILE")
        bad = ubenchai("client", "run", "--recipe", str(recipe), "--target", url, "--output", str(tmp_path / "b"))
        assert bad.returncode == 3 and "CERTIFICATE_VERIFY_FAILED" in bad.stderr
    finally:
        LocalOrchestrator().stop(dep)


def test_client_run_listed_checked_and_stopped_from_another_command(write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("UBENCHAI_STATE_DIR", str(tmp_path / "state"))
    recipe = write_recipe(truth_recipe("long", duration_s=60.0, load={"mode": "closed", "concurrency": [1, 2]}))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(recipe), "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        spid = service_pid(out / "services" / "long" / "endpoint.json")
        listing = ubenchai("client", "list").stdout
        (line,) = [ln for ln in listing.splitlines() if "long-" in ln]
        client_id = re.search(r"(long-\d{8}-\d{6}-[0-9a-f]{4})", line).group(1)
        assert "running" in line and "0/2" in line
        status = ubenchai("client", "status", client_id)
        assert status.returncode == 0 and "running, 0/2 cases done" in status.stdout
        time.sleep(1.0)
        stop = ubenchai("client", "stop", client_id)
        assert stop.returncode == 0 and f"stopped {client_id}" in stop.stdout
        assert proc.wait(30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not pid_alive(spid)  # the run's own service went with it
    partial = json.loads((out / "long-concurrency=1" / "results.json").read_text())
    assert partial["aborted"] == "interrupted"
    assert "long-" not in ubenchai("client", "list").stdout
    assert ubenchai("client", "status", client_id).returncode == 2


def test_compare_and_client_run_baseline_gate(write_recipe, tmp_path):
    def recipe(ttft: str) -> Path:
        data = truth_recipe("cmp", duration_s=2.0)
        data["service"]["command"] = [*data["service"]["command"][:5], "--ttft-ms", ttft, "--itl-ms", "1"]
        return write_recipe(data, "cmp")

    base, fast, slow = tmp_path / "base", tmp_path / "fast", tmp_path / "slow"
    saved = ubenchai("client", "run", "--recipe", str(recipe("10")), "--output", str(base), "--save-baseline",
                     str(tmp_path / "bl"))  # fmt: skip
    assert saved.returncode == 0 and (tmp_path / "bl" / "cmp-concurrency=2" / "results.json").exists()
    same = ubenchai("client", "run", "--recipe", str(recipe("10")), "--output", str(fast), "--baseline",
                    str(tmp_path / "bl"))  # fmt: skip
    assert same.returncode == 0, same.stdout
    worse = ubenchai("client", "run", "--recipe", str(recipe("14")), "--output", str(slow), "--baseline",
                     str(tmp_path / "bl"))  # fmt: skip
    assert worse.returncode == 1 and re.search(r"ttft_ms .* \+\d\d\.\d% .* regression", worse.stdout), worse.stdout
    assert "re-measured on a fresh deployment (1)" in worse.stdout  # the default: one confirming run
    blunt = ubenchai("client", "run", "--recipe", str(recipe("14")), "--output", str(tmp_path / "blunt"), "--baseline",
                     str(tmp_path / "bl"), "--set", "regression.confirm=0")  # fmt: skip
    gate = validate(tmp_path / "blunt" / "cmp-concurrency=2" / "results.json")["baseline"]
    assert blunt.returncode == 1 and gate["regressed"] is True and "confirmation" not in gate
    assert not (tmp_path / "blunt" / "cmp-concurrency=2" / "confirm").exists()
    assert ubenchai("compare", str(base), str(fast)).returncode == 0
    cmp = ubenchai("compare", str(base), str(slow))
    assert cmp.returncode == 1 and "cmp-concurrency=2" in cmp.stdout and "regression" in cmp.stdout
    assert ubenchai("compare", str(base), str(tmp_path / "nothing")).returncode == 2
    assert closed_stdout("compare", str(base), str(slow)) == (141, "")  # `ubenchai compare ... | head`


def closed_stdout(*args: str) -> tuple[int, str]:
    """Run with a stdout whose reader is gone before anything is written: exit code and stderr."""
    cmd = [sys.executable, "-m", "pytest_ubench", *args]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        proc.stdout.close()  # type: ignore[union-attr]
        err = proc.stderr.read()  # type: ignore[union-attr]
        return proc.wait(timeout=60), err


def test_a_closed_pipe_ends_a_table_quietly():
    assert closed_stdout("recipe", "list") == (141, "")


def test_client_calibrate_reports_a_trustworthy_rate(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_ubench",
            "client",
            "calibrate",
            "--seconds",
            "0.5",
            "--server",
            "builtin",
            "--max-rate",
            "2000",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, COLUMNS="200"),
    )
    assert res.returncode == 0, res.stderr
    assert "500 req/s: kept up" in res.stderr  # progress and the table go to the console (stderr)
    if "kept up at every rate tried" in res.stdout:
        assert "trustworthy below 2,000 req/s with 1 client process(es)" in res.stdout
    else:  # a machine busy with other tests (seen under pytest -n 2: 2,000 req/s lagged 14 ms): the rate below
        assert re.search(r"trustworthy below (500|1,000) req/s with 1 client process\(es\)", res.stdout), res.stdout


def test_a_workload_only_recipe_runs_against_a_service_id_from_server_list(write_recipe, tmp_path, monkeypatch):
    """The seed's flow without copying URLs: ``server start`` prints an id, ``client run --target ID``
    measures that service with a recipe that has no service part. Oracle: the truth server's own record
    of the requests it served (its /truth)."""
    import httpx

    monkeypatch.setenv("UBENCHAI_STATE_DIR", str(tmp_path / "state"))
    service_id, url = ubenchai("server", "start", "--recipe", str(write_recipe(truth_recipe("svc"), "svc")),
                               "--output", str(tmp_path / "out")).stdout.split()  # fmt: skip
    try:
        workload_only = truth_recipe("wl", duration_s=1.0)
        del workload_only["service"]
        recipe = write_recipe(workload_only, "wl")
        listed = json.loads(ubenchai("server", "list", "--json").stdout)
        assert [(s["id"], s["url"], s["state"]) for s in listed] == [(service_id, url, "running")]
        before = len(httpx.get(f"{url}/truth").json())
        done = ubenchai(
            "client", "run", "--recipe", str(recipe), "--target", service_id, "--output", str(tmp_path / "r")
        )
        assert done.returncode == 0, done.stderr
        result = validate(tmp_path / "r" / "wl-concurrency=2" / "results.json")
        served = len(httpx.get(f"{url}/truth").json()) - before
        assert result["endpoint"] == url and 10 < result["requests"]["ok"] <= served  # warm-up requests come on top
        without = ubenchai("client", "run", "--recipe", str(recipe), "--output", str(tmp_path / "n"))
        assert without.returncode == 2 and "a 'service' part is required" in without.stderr  # no target: said so
    finally:
        ubenchai("server", "stop", service_id)
