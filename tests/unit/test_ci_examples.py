"""The CI examples in ci/examples/ run what the test suite runs: every script exists, every ubench option
is one the plugin has, every recipe and cluster profile they name loads."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_ubench import plugin
from pytest_ubench.recipes import loader

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "ci" / "examples").glob("*.yml"))


def plugin_options() -> set[str]:
    names: set[str] = set()

    class Group:
        def addoption(self, *opts: str, **_: Any) -> None:
            names.update(opts)

    class Parser:
        def getgroup(self, *_: Any) -> Group:
            return Group()

        def addini(self, *_: Any, **__: Any) -> None:
            pass

    plugin.pytest_addoption(Parser())  # type: ignore[arg-type]
    return names


def commands(doc: dict[str, Any]) -> list[str]:
    """Every shell command of a GitHub workflow (steps' run) or a GitLab pipeline (script lines)."""
    out: list[str] = []
    for job in (doc.get("jobs") or {k: v for k, v in doc.items() if isinstance(v, dict) and "script" in v}).values():
        out += [s["run"] for s in job.get("steps", []) if "run" in s]
        out += job.get("script", [])
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_ci_example_runs_only_what_exists(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    text = "\n".join(commands(doc))
    assert text, f"{path.name}: no commands found"
    scripts = set(re.findall(r"\bci/[a-z-]+\b", text))
    assert scripts and all(os.access(ROOT / s, os.X_OK) for s in scripts), scripts
    used = set(re.findall(r"--ubench-[a-z-]+", text))
    assert used and used <= plugin_options(), used - plugin_options()
    for recipe in re.findall(r"--ubench-recipe=(\S+)", text):
        loader.load(ROOT / recipe if "/" in recipe else recipe, extra_dirs=[ROOT / "recipes"])
    for cluster in re.findall(r"--ubench-cluster=(\S+)", text):
        loader.load_cluster(cluster, [ROOT / "recipes"])


def test_github_workflow_shape() -> None:
    doc = yaml.safe_load((ROOT / "ci" / "examples" / "github-actions.yml").read_text())
    assert doc["jobs"]["benchmark"]["needs"] == "test"
    for job in doc["jobs"].values():
        assert job["runs-on"].startswith("ubuntu-")
        assert all(re.fullmatch(r"actions/[a-z-]+(/[a-z]+)?@v\d+", s["uses"]) for s in job["steps"] if "uses" in s)


def test_gitlab_pipeline_shape() -> None:
    doc = yaml.safe_load((ROOT / "ci" / "examples" / "gitlab-ci.yml").read_text())
    jobs = {k: v for k, v in doc.items() if isinstance(v, dict) and "script" in v}
    assert {j["stage"] for j in jobs.values()} <= set(doc["stages"])
    assert jobs["benchmark:meluxina"]["artifacts"]["reports"]["junit"] == "junit.xml"


def test_github_baseline_cache_is_keyed_by_this_runners_cpu(tmp_path: Path) -> None:
    """The step that names the runner's CPU runs here and gives a usable cache-key part, which every
    baseline cache key carries (a baseline from another CPU would not gate anyway)."""
    import subprocess

    doc = yaml.safe_load((ROOT / "ci" / "examples" / "github-actions.yml").read_text())
    steps = doc["jobs"]["benchmark"]["steps"]
    cpu = next(s for s in steps if s.get("id") == "cpu")
    out = tmp_path / "github_output"
    subprocess.run(["bash", "-c", cpu["run"]], env={**os.environ, "GITHUB_OUTPUT": str(out)}, check=True)
    model = out.read_text().strip().removeprefix("model=")
    assert re.fullmatch(r"[A-Za-z0-9-]+", model), model
    keys = [s["with"]["key"] for s in steps if s.get("uses", "").startswith("actions/cache/")]
    assert len(keys) == 2 and all(k.startswith("ubench-baseline-${{ steps.cpu.outputs.model }}-") for k in keys)
