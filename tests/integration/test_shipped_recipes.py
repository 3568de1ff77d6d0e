"""Every recipe we ship in recipes/ runs here as shipped: the same file, through ``ubenchai client run``,
only its durations shortened with --set. A recipe that breaks (a renamed field, a server flag that changed,
an SLO this machine cannot meet) fails here, not in a user's first run. The MeluXina recipes need a GPU
cluster and Apptainer: their Slurm path is tested in test_slurm.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from helpers import SCHEMA

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))
SHORT = ["--set", "workload.duration_s=1.5", "--set", "workload.warmup_s=0.5"]
# Other durations, where a recipe has them: a capacity search's probe at each rate.
MORE = {"llm-capacity": ["--set", "workload.load.probe_s=1.5"]}
# What a recipe's comments tell its user to export (secrets come from the environment).
ENV = {"s3": {"UBENCH_S3_ACCESS_KEY": "test", "UBENCH_S3_SECRET_KEY": "test"}}
# Verdicts a recipe is built to give (its comments say why): Milvus' narrowest search misses the recall bar.
FAILS = {"vector-milvus-concurrency=4-ef=10": "recall.mean >= 0.9"}


def test_every_shipped_recipe_is_here() -> None:
    """The list below the parametrized test is the directory's: a new recipe is tested without a word."""
    assert len(SHIPPED) >= 12 and "llm-inference" in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_runs_as_shipped(name: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(REPO / "recipes" / f"{name}.yaml"),
           "--output", str(out), *SHORT, *MORE.get(name, [])]  # fmt: skip
    env = os.environ | ENV.get(name, {})
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    results = sorted(out.glob("*/results.json"))
    expected = 1 if any(p.parent.name in FAILS for p in results) else 0  # 1: an SLO failed, as it should
    assert done.returncode == expected, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert results, done.stdout
    for path in results:
        result = json.loads(path.read_text())
        jsonschema.validate(result, SCHEMA)
        ops = result.get("ops") or {}
        worked = result["requests"]["ok"] > 0 or any(o.get("per_s", 0) > 0 for o in ops.values())  # fio: its ops
        failed = [v["expression"] for v in result["slo"] if not v["passed"]]
        assert worked and failed == ([FAILS[path.parent.name]] if path.parent.name in FAILS else []), (
            path.parent.name,
            result["requests"],
            failed,
        )
