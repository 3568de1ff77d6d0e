"""Credentials a user put in a target URL or a service's command line: never written out, and warned of."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import TRUTH, start, truth_recipe

from pytest_ubench.orchestrators.local import LocalOrchestrator

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_credentials_in_a_target_url_are_written_nowhere(tmp_path: Path) -> None:
    secret = "hunter2-do-not-leak"
    dep = start(TRUTH, tmp_path / "truth", "truth")
    try:
        url = dep.endpoint.url.replace("http://", f"http://alice:{secret}@")
        recipe = tmp_path / "r.yaml"
        data = truth_recipe("creds")
        data["service"] = {"url": url}  # in the recipe too: its resolved copy goes into results.json
        recipe.write_text(yaml.safe_dump(data))
        env = dict(os.environ, UBENCHAI_LOG_DIR=str(tmp_path / "logs"))
        res = subprocess.run(
            [sys.executable, "-m", "pytest_ubench", "-v", "client", "run", "--recipe", str(recipe), "--target", url,
             "--output", str(tmp_path / "out")],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
    finally:
        LocalOrchestrator().stop(dep)
    assert res.returncode == 0, res.stderr
    assert secret not in res.stdout + res.stderr and "credentials in the target URL" in res.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".log")]
    assert any(p.name == "results.json" for p in files) and any(p.name == "endpoint.json" for p in files)
    for path in files:
        assert secret not in path.read_text(errors="replace"), path


def test_validate_warns_of_a_secret_in_the_command_line(write_recipe) -> None:
    data = truth_recipe("argv")
    data["service"]["command"] = [*data["service"]["command"], "--api-key", "${HF_TOKEN}", "--name", "${RUN_NAME}"]
    res = subprocess.run([sys.executable, "-m", "pytest_ubench", "recipe", "validate", str(write_recipe(data))],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert res.returncode == 0 and ": ok (1 case)" in res.stdout
    assert "service.command[" in res.stderr and "${HF_TOKEN} puts a secret in the service's command line" in res.stderr
    assert "RUN_NAME" not in res.stderr  # not a secret's name


@pytest.mark.parametrize("placement", ["local", "slurm"])
def test_a_service_beyond_loopback_gets_a_key_per_deployment(
    placement: str, tmp_path: Path, write_recipe, request: pytest.FixtureRequest
) -> None:
    """``service.api_key_env``: a fresh key per deployment, read by the server from that variable (the
    truth server, like vLLM with VLLM_API_KEY, then answers 401 without it) and sent by the load clients,
    here and (Slurm) as client tasks on the nodes. The key is in a 0600 file of the user's, removed at the
    stop, and nowhere else: not in scripts, logs, results, the registry or any command line."""
    import httpx
    import psutil

    slurm = placement == "slurm"
    if slurm:
        request.getfixturevalue("slurm_cluster")
    data = truth_recipe("keyed", "--api-key-env", "UB_TEST_KEY", "--host", "{host}")
    data["service"].update(api_key_env="UB_TEST_KEY", host="0.0.0.0")
    if slurm:  # and the load from two client tasks of a job, which find the key themselves
        data["workload"].update(orchestration="slurm", clients={"nodes": 1, "tasks_per_node": 2})
    path = write_recipe(data, "keyed")
    state = tmp_path / "state"
    env = dict(os.environ, UBENCHAI_STATE_DIR=str(state), UBENCHAI_LOG_DIR=str(tmp_path / "logs"))
    where = ["--cluster", str(REPO / "recipes" / "clusters" / "ci-slurm.yaml")] if slurm else []

    def ubenchai(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest_ubench", "-v", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=180, check=False)  # fmt: skip

    started = ubenchai("server", "start", "--recipe", str(path), *where, "--output", str(tmp_path / "svc"))
    assert started.returncode == 0, started.stderr
    service_id, url = started.stdout.split()
    try:
        (key_file,) = (state / "keys").iterdir()
        key = key_file.read_text()
        assert len(key) >= 40 and key_file.stat().st_mode & 0o777 == 0o600
        assert (state / "keys").stat().st_mode & 0o777 == 0o700
        completions = url + "/v1/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert httpx.post(completions, json=body, timeout=10).status_code == 401
        assert httpx.post(completions, json=body, headers={"Authorization": "Bearer x"}, timeout=10).status_code == 401
        ran = ubenchai(
            "client", "run", "--recipe", str(path), "--target", service_id, "--output", str(tmp_path / "run")
        )
        assert ran.returncode == 0, ran.stderr[-3000:]
        result = json.loads(next((tmp_path / "run").rglob("results.json")).read_text())
        assert result["requests"]["ok"] > 0 and result["requests"]["errors"] == {}
        assert httpx.get(url + "/truth/rejected", timeout=10).json() == {"rejected": 2}  # only the two above
        if not slurm:  # the server's command line holds the variable's name, never the key
            pid = json.loads(next((state / "services").iterdir()).read_text())["endpoint"]["pid"]
            assert key not in " ".join(psutil.Process(pid).cmdline())
        written = [p for p in tmp_path.rglob("*") if p.is_file() and p != key_file]
        assert written and not [p for p in written if key in p.read_text(errors="replace")]
        assert key not in started.stdout + started.stderr + ran.stdout + ran.stderr
    finally:
        stopped = ubenchai("server", "stop", service_id)
    assert stopped.returncode == 0, stopped.stderr
    assert list((state / "keys").iterdir()) == []


def test_validate_warns_of_a_service_beyond_loopback_without_a_key(write_recipe) -> None:
    data = truth_recipe("open")
    data["service"]["host"] = "0.0.0.0"
    res = subprocess.run([sys.executable, "-m", "pytest_ubench", "recipe", "validate", str(write_recipe(data))],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert res.returncode == 0 and "service.host 0.0.0.0: listens beyond loopback without a per-deployment key" in (
        res.stderr
    )
