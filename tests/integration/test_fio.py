"""File storage through the real fio binary: job files from recipes, its JSON parsed into ``ops``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from helpers import run_cases

from pytest_ubench.protocols.fio import FioError
from pytest_ubench.report.standalone import render

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _fio_installed() -> None:
    if subprocess.run(["sh", "-c", "command -v fio"], capture_output=True).returncode != 0:
        pytest.fail("fio is not installed: ci/install-services installs it (apt-get install fio)")


def _recipe(name: str, jobs: list[dict], directory: str = "{run_dir}/fio", **workload: object) -> dict:
    wl: dict = {"protocol": "fio", "stream": False, "fio": {"directory": directory, "jobs": jobs},
                "load": {"mode": "closed", "concurrency": 1}, "duration_s": 1.0, "warmup_s": 0.2}  # fmt: skip
    wl.update(workload)
    return {"name": name, "workload": wl}


def test_fio_jobs_become_operations_with_rate_bandwidth_and_latency(write_recipe, tmp_path):
    jobs = [
        {"name": "seqwrite", "rw": "write", "bs": "64KiB", "size": "8MiB"},
        # fio paces this job to 400 IOPS: the parsed rate must say so.
        {"name": "paced", "rw": "randread", "bs": "4KiB", "size": "8MiB", "options": {"rate_iops": 400}},
    ]
    recipe = _recipe("fio", jobs, duration_s=2.0)
    recipe["slo"] = ["ops.paced_read.per_s > 300", "ops.seqwrite_write.bytes_per_s > 1000000"]
    (res,) = run_cases(write_recipe, tmp_path, recipe)
    ops = res.result["ops"]
    assert set(ops) == {"seqwrite_write", "paced_read"}
    assert ops["paced_read"]["per_s"] == pytest.approx(400, rel=0.05)
    for o in ops.values():
        assert o["bytes_per_s"] == pytest.approx(o["bytes"] / o["seconds"], rel=0.02)
        lat = o["latency_ms"]
        assert lat["count"] == o["total"] > 0 and 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert ops["paced_read"]["bytes"] == 4096 * ops["paced_read"]["total"]
    job_file = (res.run_dir / "job.fio").read_text()
    assert "[paced]\nstonewall\nrw=randread\nbs=4096" in job_file and "rate_iops=400" in job_file
    assert list((res.run_dir / "fio").iterdir()) == []  # fio's data files are removed
    assert res.passed and res.result["requests"]["total"] == sum(o["total"] for o in ops.values())
    page = render(tmp_path / "out")  # the standalone report's operations table
    assert "<h3>Operations</h3>" in page and "<td>paced_read</td>" in page
    paced = re.search(r"paced_read (\d+) IOPS", res.key_figures())  # 400 asked: 399 or 401 are fio's pacing
    assert "PASSED" not in res.key_figures() and paced is not None and abs(int(paced.group(1)) - 400) <= 20


def test_concurrency_sweeps_parallel_jobs(write_recipe, tmp_path):
    recipe = _recipe("sweep", [{"name": "r", "rw": "read", "bs": "4KiB", "size": "4MiB"}], duration_s=0.5,
                     load={"mode": "closed", "concurrency": [1, 3]})  # fmt: skip
    one, three = run_cases(write_recipe, tmp_path, recipe)
    assert "numjobs=1" in (one.run_dir / "job.fio").read_text()
    assert "numjobs=3" in (three.run_dir / "job.fio").read_text()
    assert three.result["dataset"]["jobs"][0]["numjobs"] == "3"


def test_a_full_disk_fails_the_job_and_keeps_the_other_figures(write_recipe, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)]).returncode:
        pytest.skip("needs root to mount a 2 MiB tmpfs (CI runs as root)")
    try:
        jobs = [{"name": "fill", "rw": "write", "bs": "64KiB", "size": "8MiB"},
                {"name": "after", "rw": "read", "bs": "4KiB", "size": "512KiB"}]  # fmt: skip
        (res,) = run_cases(write_recipe, tmp_path, _recipe("full", jobs, directory=str(small)))
    finally:
        subprocess.run(["umount", str(small)], check=False)
    failed = [v for v in res.verdicts if not v.passed]
    assert [v.expression for v in failed] == ["fio job fill ran"]
    assert "No space left on device (errno 28)" in failed[0].note
    assert res.result["ops"]["after_read"]["total"] > 0  # the job after the failure was still measured
    assert not res.passed


def test_missing_fio_and_a_bad_directory_are_named(write_recipe, tmp_path, monkeypatch):
    recipe = _recipe("nofio", [{"name": "r", "rw": "read", "size": "1MiB"}])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FioError, match="needs the fio binary"):
        run_cases(write_recipe, tmp_path / "a", recipe)
    monkeypatch.undo()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FioError, match=r"workload\.fio\.directory: cannot create .*file/sub"):
        run_cases(write_recipe, tmp_path / "b", _recipe("baddir", [{"name": "r", "rw": "read"}], str(blocker / "sub")))


def test_interrupt_keeps_what_fio_measured_and_leaves_no_fio_running(write_recipe, tmp_path):
    recipe = write_recipe(_recipe("stopped", [{"name": "rr", "rw": "randread", "bs": "4KiB", "size": "4MiB"}],
                                  duration_s=60.0, warmup_s=0))  # fmt: skip
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(recipe), "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job = out / "stopped-concurrency=1" / "job.fio"
    deadline = time.monotonic() + 30
    while not job.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # fio is reading
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    data = json.loads((out / "stopped-concurrency=1" / "results.json").read_text())
    assert data["aborted"] == "interrupted" and data["ops"]["rr_read"]["total"] > 0
    assert subprocess.run(["pgrep", "-f", str(job)], capture_output=True).returncode == 1  # no fio left
