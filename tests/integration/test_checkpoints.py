"""A long run killed with SIGKILL: what it leaves (the last checkpoint's results.json and every block of
records written by then) is readable, reportable, and agrees with the server's own log."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jsonschema
from helpers import SCHEMA, truth_recipe, ubenchai

from pytest_ubench.metrics.record_files import PARTS, read_case


def test_a_run_killed_mid_way_keeps_its_checkpoint_and_its_records(truth_server, write_recipe, tmp_path: Path) -> None:
    dep = truth_server("--ttft-ms", "2", "--itl-ms", "1")
    recipe = truth_recipe("soak", dataset={"prompt_tokens": 16, "output_tokens": 6, "prompts": 8},
                          load={"mode": "closed", "concurrency": 4}, duration_s=60, warmup_s=0.5,
                          checkpoint_s=1)  # fmt: skip
    recipe["service"] = {"url": dep.endpoint.url}
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(write_recipe(recipe))]
    harness = subprocess.Popen([*cmd, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    case = out / "soak-concurrency=4"
    deadline = time.monotonic() + 60
    doc: dict = {}
    while time.monotonic() < deadline and (doc.get("partial") or {}).get("at_s", 0) < 2.5:
        time.sleep(0.2)
        if (case / "results.json").exists():
            doc = json.loads((case / "results.json").read_text())
    assert doc.get("partial"), "no checkpoint within 60 s"
    harness.send_signal(signal.SIGKILL)
    harness.wait(timeout=10)
    served = len(json.load(urllib.request.urlopen(dep.endpoint.url + "/truth")))

    doc = json.loads((case / "results.json").read_text())  # the last checkpoint, whole (written atomically)
    jsonschema.validate(doc, SCHEMA)
    assert doc["partial"]["at_s"] >= 2.5 and doc["passed"] is False and doc["requests"]["total"] > 0
    assert not (case / "records.parquet").exists()  # the run never ended
    kept = read_case(case)  # the blocks it spilled, up to its last checkpoint (each file written whole)
    assert list((case / PARTS).rglob("*.parquet")) and not list((case / PARTS).rglob("*.tmp"))
    counted = doc["requests"]["total"] + doc["load"]["warmup_requests"]
    assert counted <= len(kept) <= served, (counted, len(kept), served)
    assert all(r.ok and len(r.chunks) == 6 for r in kept)  # each one whole, as the server sent it

    res = ubenchai("report", str(out))
    assert res.returncode == 0, res.stderr
    page = (out / "report.html").read_text()
    assert "partial: still running at the last checkpoint" in page and "Latency distributions" in page
    res = ubenchai("records", str(out), "--format", "csv")
    assert res.returncode == 0, res.stderr
    assert len((case / "records.csv").read_text().splitlines()) == len(kept) + 1
