"""Shared fixtures: real servers started through the project's own local orchestrator."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
import yaml
from helpers import LLAMA, TRUTH, start

from pytest_ubench.orchestrators.base import Deployment
from pytest_ubench.orchestrators.local import LocalOrchestrator


@pytest.fixture
def truth_server(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """Start ground-truth stream servers: ``truth_server("--ttft-ms", "20")``; all stopped after."""
    started: list[Deployment] = []

    def make(*args: str) -> Deployment:
        dep = start([*TRUTH, *args], tmp_path / f"truth{len(started)}", "truth")
        started.append(dep)
        return dep

    yield make
    for dep in started:
        LocalOrchestrator().stop(dep)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The real llama.cpp server on the generated tiny model, shared by the tests that need it."""
    dep = start(LLAMA, tmp_path_factory.mktemp("llama"), "llama")
    yield dep
    LocalOrchestrator().stop(dep)


@pytest.fixture
def write_recipe(tmp_path: Path) -> Callable[..., Path]:
    """Write a recipe (a dict, or raw YAML text) into tmp_path/recipes and return its path."""

    def write(data: dict | str, name: str = "r") -> Path:
        d = tmp_path / "recipes"
        d.mkdir(exist_ok=True)
        path = d / f"{name}.yaml"
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        return path

    return write


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """A real Slurm cluster: the one already answering, or ci/slurm's two-node cluster (root only).

    A cluster this fixture brought up is taken down at the end of the session; one that was already
    there is left as it was.
    """
    if subprocess.run([REPO / "ci" / "slurm", "status"], check=False).returncode == 0:
        yield
        return
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("Slurm tests need a running cluster or root to start ci/slurm's")
        pytest.skip("no Slurm cluster answers and not root: run 'sudo ci/slurm up' first")
    up = subprocess.run([REPO / "ci" / "slurm", "up"], capture_output=True, text=True, timeout=300, check=False)
    if up.returncode != 0:
        pytest.fail(f"ci/slurm up failed:\n{up.stdout}{up.stderr}")
    try:
        yield
    finally:
        if up.stdout.strip() == "started":
            subprocess.run([REPO / "ci" / "slurm", "down"], timeout=60, check=False)


@pytest.fixture
def apptainer_double(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """TEST DOUBLE: tests/doubles/apptainer first on PATH (Apptainer cannot be installed here).

    Returns the file where the double logs each command line it was given.
    """
    log = tmp_path / "apptainer-calls.jsonl"
    monkeypatch.setenv("PATH", f"{REPO / 'tests' / 'doubles'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("APPTAINER_DOUBLE_LOG", str(log))
    return log


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """In CI (``CI`` set, as ci/test does) a test skipped for a missing component fails: a green run must
    mean every test ran, not that the parts it needed were absent."""
    report: pytest.TestReport = yield
    if report.skipped and os.environ.get("CI") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {reason}"
    return report
