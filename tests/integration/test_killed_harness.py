"""A harness killed with SIGKILL (no handler, no atexit) leaves nothing running: not the service's whole
process tree (a shell with two children, as PDEATHSIG alone would leave under init), and, on Slurm, not
the service's job or the load clients' job (their heartbeat goes stale: they cancel themselves)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from helpers import truth_recipe

pytestmark = pytest.mark.integration

# A service whose group holds a shell and two children: the truth server and a sleep.
TREE = ["sh", "-c", "{python} -m pytest_ubench.testing.truthserver --port {port} & sleep 300 & wait"]


def _group(pgid: int) -> list[psutil.Process]:
    members = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                members.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def _wait_for(path: Path, timeout_s: float = 60.0) -> Path:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)
    return path


def _recipe(tmp_path: Path, **workload: object) -> Path:
    recipe = truth_recipe("killed", duration_s=120.0, **workload)
    recipe["service"]["command"] = TREE
    recipe["service"]["api_key_env"] = "UBENCH_TEST_KEY"  # a key file per deployment, in the state directory
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("harness", ["ubenchai", "pytest"])
def test_the_whole_service_tree_dies_with_a_killed_harness(harness: str, tmp_path: Path) -> None:
    """The service's whole group is stopped, and its key file (a secret only the deployment needs) removed."""
    recipe, out = _recipe(tmp_path), tmp_path / "out"
    state = tmp_path / "state"
    if harness == "ubenchai":
        cmd = [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(recipe), "--output", str(out)]
    else:
        (tmp_path / "test_bench.py").write_text("def test_llm(ubench_case, ubench):\n    ubench.run(ubench_case)\n")
        cmd = [sys.executable, "-m", "pytest", str(tmp_path / "test_bench.py"), f"--ubench-recipe={recipe}",
               f"--ubench-output={out}", "-p", "no:cacheprovider"]  # fmt: skip
    env = os.environ | {"UBENCHAI_STATE_DIR": str(state)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = _wait_for(out / "services" / "killed" / "endpoint.json")
        pgid = json.loads(endpoint.read_text())["pid"]
        key_file = Path(json.loads(endpoint.read_text())["key_file"])
        assert key_file.parent == state / "keys" and key_file.exists()
        deadline = time.monotonic() + 30
        while len(_group(pgid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_group(pgid)) >= 3  # sh, the server, the sleep
        time.sleep(1.0)  # under load
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 15
    while (_group(pgid) or key_file.exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _group(pgid) == [] and list((state / "keys").iterdir()) == []


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_jobs_of_a_killed_harness_cancel_themselves(tmp_path: Path) -> None:
    """Service job and client job of a run whose harness is killed: gone within the heartbeat + 10 s."""
    profile = tmp_path / "hb.yaml"
    profile.write_text(yaml.safe_dump({"name": "hb", "orchestrator": "slurm", "partition": "debug",
                                       "time": "00:30:00", "heartbeat_s": 6}))  # fmt: skip
    recipe = _recipe(tmp_path, orchestration="slurm", clients={"nodes": 1, "tasks_per_node": 1})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(recipe), "--cluster", str(profile),
           "--output", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(out / "killed-concurrency=2" / "clients" / "clients.sbatch", 120)
        deadline = time.monotonic() + 60
        while len(_jobs("ubench-")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert {j.split()[1] for j in _jobs("ubench-")} >= {"ubench-killed", "ubench-clients-killed"}
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = time.monotonic()
    while _jobs("ubench-") and time.monotonic() < killed_at + 6 + 10:
        time.sleep(0.5)
    assert _jobs("ubench-") == []


def _jobs(prefix: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True, timeout=30, check=True)
    return [line for line in out.stdout.splitlines() if line.split()[1].startswith(prefix)]
