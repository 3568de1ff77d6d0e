"""A protocol that is not in the package: examples/memcached-protocol, installed with pip into a directory
of its own, found through its ``ubench.protocols`` entry point, and run through ``ubenchai client run`` and
through pytest against a real memcached, whose own counters are the oracle."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import record_rows, start

from pytest_ubench.orchestrators.local import LocalOrchestrator

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "memcached-protocol"
MEMCACHED = ["memcached", "-l", "{host}", "-p", "{port}", "-U", "0", "-t", "1", "-u", "nobody"]
SHORT = {"workload": {"load": {"concurrency": [3]}, "duration_s": 1.0, "warmup_s": 0.3}}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed as a user would (pip, its own pyproject), into a directory of its own."""
    target = tmp_path_factory.mktemp("site")
    source = shutil.copytree(EXAMPLE, tmp_path_factory.mktemp("src") / EXAMPLE.name)  # pip builds in the tree
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (entry_points,) = target.glob("ubench_memcached-*.dist-info/entry_points.txt")
    assert "memcached = ubench_memcached:MEMCACHED" in entry_points.read_text()
    return target


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def _stats(port: int) -> dict[str, int]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            data += s.recv(65536)
    return {p[1]: int(p[2]) for line in data.decode().splitlines() if len(p := line.split()) == 3 and p[2].isdigit()}


def test_client_run_counts_what_memcached_counted(site: Path, tmp_path: Path) -> None:
    dep = start(MEMCACHED, tmp_path / "mc", "memcached", health={"kind": "tcp"})
    try:
        before = _stats(dep.endpoint.port)
        short = tmp_path / "short.yaml"
        short.write_text(yaml.safe_dump(SHORT))
        done = subprocess.run(
            [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(EXAMPLE / "memcached.yaml"),
             "--overrides", str(short), "--target", f"memcached://127.0.0.1:{dep.endpoint.port}",
             "--output", str(tmp_path / "out")],
            env=_env(site), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        after = _stats(dep.endpoint.port)
    finally:
        LocalOrchestrator().stop(dep)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "out" / "memcached-concurrency=3" / "results.json").read_text())
    records = record_rows(tmp_path / "out" / "memcached-concurrency=3")
    gets = sum(r["op"] == "get" for r in records)
    sets = sum(r["op"] == "set" for r in records)
    assert all(r["error"] is None for r in records) and gets > 100 and sets > 10
    # memcached's own counters: every GET we recorded (warm-up too), every SET plus the 1,000 preloaded keys
    assert after["cmd_get"] - before["cmd_get"] == gets
    assert after["get_hits"] - before["get_hits"] == gets
    assert after["cmd_set"] - before["cmd_set"] == sets + 1000
    measured = [r for r in records if not r["warmup"]]
    assert result["ops"]["get"]["total"] == sum(r["op"] == "get" for r in measured)
    assert result["recipe"]["resolved"]["workload"]["memcached"] == {"keys": 1000, "value_bytes": 100,
                                                                      "get_share": 0.8, "seed": 0}  # fmt: skip
    assert "memcached-concurrency=3" in done.stdout and result["passed"] is True


def test_pytest_runs_the_outside_protocol_and_without_it_names_it_unknown(
    site: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_bench="def test_kv(ubench_case, ubench):\n    ubench.run(ubench_case)\n")
    short = pytester.path / "short.yaml"
    short.write_text(yaml.safe_dump(SHORT))
    args = [f"--ubench-recipe={EXAMPLE / 'memcached.yaml'}", f"--ubench-override={short}",
            f"--ubench-output={pytester.path / 'out'}", "-p", "no:cacheprovider"]  # fmt: skip
    res = pytester.runpytest_subprocess(*args)  # the package is not installed here
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*memcached.yaml:*workload.protocol: unknown protocol 'memcached'; known: *fio*"])
    monkeypatch.setenv("PYTHONPATH", _env(site)["PYTHONPATH"])
    res = pytester.runpytest_subprocess(*args)
    res.assert_outcomes(passed=1)
    result = json.loads((pytester.path / "out" / "memcached-concurrency=3" / "results.json").read_text())
    assert result["requests"]["failed"] == 0 and result["ops"]["set"]["total"] > 0
