"""Helpers shared by the test modules (importable because pyproject sets pythonpath = tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from pytest_ubench import CaseResult, Services, expand, run_case
from pytest_ubench import load_recipe as load
from pytest_ubench.orchestrators.base import Deployment
from pytest_ubench.orchestrators.health import deploy_healthy as deploy
from pytest_ubench.orchestrators.local import LocalOrchestrator
from pytest_ubench.recipes.deployment import ServiceSpec

TRUTH = ["{python}", "-m", "pytest_ubench.testing.truthserver", "--port", "{port}"]
LLAMA = [
    "{python}",
    "-m",
    "pytest_ubench.servers.llamacpp",
    "--port",
    "{port}",
    "--size",
    "tiny",
    "--parallel",
    "4",
    "--threads",
    "1",
]


def truth_recipe(name: str = "truth", *server_args: str, **workload: object) -> dict:
    """A recipe whose service is the truth server (fast and exact) started by the harness."""
    wl: dict = {
        "protocol": "openai-chat",
        "model": "m",
        "dataset": {"prompt_tokens": 16, "output_tokens": 8, "prompts": 8},
        "load": {"mode": "closed", "concurrency": 2},
        "duration_s": 1.0,
        "warmup_s": 0.2,
    }
    wl.update(workload)
    return {
        "name": name,
        "service": {"command": [*TRUTH, "--ttft-ms", "5", "--itl-ms", "1", *server_args]},
        "workload": wl,
        "slo": ["error_rate < 0.01", "ttft_ms.p50 < 1000"],
    }


def pid_alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Something is listening there."""
    import socket

    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def service_pid(endpoint_file: Path, timeout_s: float = 30.0) -> int:
    """Wait for a harness to write a service's endpoint file; return the service's pid."""
    deadline = time.monotonic() + timeout_s
    while not endpoint_file.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{endpoint_file} was not written")
        time.sleep(0.1)
    return int(json.loads(endpoint_file.read_text())["pid"])


def start(
    command: list[str], run_dir: Path, name: str = "svc", tls: bool = False, health: dict | None = None
) -> Deployment:
    """Start a service through the project's own harness (deploy + health check)."""
    spec = ServiceSpec.model_validate({"command": command, "tls": tls, "health": health or {}})
    return deploy(LocalOrchestrator(), spec, name, run_dir)


SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "results-schema.json").read_text())


def run_cases(write_recipe, tmp_path: Path, recipe: dict) -> list[CaseResult]:
    """Every case of a recipe through the harness (no monitoring), each result checked against the
    published results schema."""
    import jsonschema

    results = []
    with Services(tmp_path / "out", monitoring=False) as services:
        for case in expand(load(write_recipe(recipe))):
            res = run_case(case, services)
            jsonschema.validate(res.result, SCHEMA)
            results.append(res)
    return results


def run_recipe(write_recipe, tmp_path: Path, recipe: dict) -> CaseResult:
    """The one case of a recipe (see ``run_cases``)."""
    (res,) = run_cases(write_recipe, tmp_path, recipe)
    return res


def run_killing_the_service(write_recipe, tmp_path: Path, recipe: dict, dep: Deployment, after_s: float) -> CaseResult:
    """Run ``recipe`` against the running ``dep`` and SIGKILL the service's process group ``after_s``
    seconds in (a server dying mid-run); the service is stopped after, whatever happened."""
    import signal
    import threading

    recipe["service"] = {"url": dep.endpoint.url, "health": {"kind": "tcp"}}
    assert dep.handle is not None

    def kill_soon() -> None:
        time.sleep(after_s)
        os.killpg(dep.handle.pid, signal.SIGKILL)

    threading.Thread(target=kill_soon, daemon=True).start()
    try:
        return run_recipe(write_recipe, tmp_path, recipe)
    finally:
        LocalOrchestrator().stop(dep)


def record_rows(case_dir: Path) -> list[dict]:
    """A case's records as the published Parquet schema has them (read with pyarrow, not our reader)."""
    rows: list[dict] = pq.read_table(case_dir / "records.parquet").to_pylist()
    return rows


def ubenchai(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_ubench", *args], capture_output=True, text=True, timeout=timeout
    )
