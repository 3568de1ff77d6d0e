"""Shared fixtures: real servers started through the project's own local orchestrator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
