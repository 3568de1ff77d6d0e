"""Credentials a user put in a target URL or a service's command line: never written out, and warned of."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import TRUTH, start, truth_recipe

from pytest_ubench.orchestrators.local import LocalOrchestrator

pytestmark = pytest.mark.integration


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
