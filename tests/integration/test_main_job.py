"""The main job as CI runs it: ci/bench's own pytest command (read from the script, not retyped here), on
the embedded llama.cpp with its Prometheus, only the durations shortened. Oracle: llama.cpp's own counter
of generated tokens, read through Prometheus, against the client's count, case by case."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import jsonschema
import pytest
from helpers import SCHEMA

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def bench_command() -> list[str]:
    """The pytest command line that ci/bench execs, as written there."""
    text = (REPO / "ci" / "bench").read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith("exec ")]
    argv = shlex.split(line.strip().removeprefix("exec "))
    assert argv[:2] == [".venv/bin/pytest", "benchmarks/"] and argv[-1] == "$@", argv
    return [sys.executable, "-m", "pytest", *argv[1:-1]]


def test_the_main_job_runs_as_ci_bench_runs_it(tmp_path: Path) -> None:
    import subprocess

    out, html, standalone = tmp_path / "results", tmp_path / "report.html", tmp_path / "ubench-report.html"
    # Later options win: the reports and results go to tmp_path; only the durations are shortened.
    cmd = [*bench_command(), f"--html={html}", f"--ubench-report={standalone}", f"--ubench-output={out}",
           "--ubench-set=workload.duration_s=3", "--ubench-set=workload.warmup_s=1"]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    cases = sorted(p.parent.name for p in out.glob("*/results.json"))
    assert cases == [f"llm-inference-concurrency={c}" for c in (1, 4, 8)]
    for case in cases:
        result = json.loads((out / case / "results.json").read_text())
        jsonschema.validate(result, SCHEMA)
        assert result["passed"] and result["requests"]["failed"] == 0
        check = result["monitoring"]["cross_check"]["llamacpp"]
        assert check["client"] > 0 and check["client"] == check["server"], check  # tokens: ours = llama.cpp's
    text = html.read_text()  # pytest-html 4 keeps its rows as JSON in an attribute: read the file as text
    assert all(f"test_recipe[{case}]" in text for case in cases) and "3 Passed" in text.replace("&#34;", "")
    report = standalone.read_text()
    assert all(case in report for case in cases) and "<svg" in report
    assert "ubench summary" in done.stdout and done.stdout.count("PASSED llm-inference-concurrency=") == 3
