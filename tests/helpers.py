"""Helpers shared by the test modules (importable because pyproject sets pythonpath = tests)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pytest_ubench.orchestrators.base import Deployment
from pytest_ubench.orchestrators.local import LocalOrchestrator
from pytest_ubench.recipes.schema import ServiceSpec
from pytest_ubench.session import deploy

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
