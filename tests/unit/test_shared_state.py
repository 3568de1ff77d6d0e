"""Shared machines and shared state: files several processes write at once, a registry in a $HOME that
several login nodes share, caches nobody else can plant, credentials that are never written out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from pytest_ubench.orchestrators import registry
from pytest_ubench.orchestrators.base import Endpoint
from pytest_ubench.protocols import vector as vdb
from pytest_ubench.recipes.fields import without_credentials

WRITER = """
import sys
from pathlib import Path
from pytest_ubench.metrics.files import write_json
from pytest_ubench.orchestrators.base import Endpoint
from pytest_ubench.orchestrators import registry
kind, path, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    if kind == "endpoint":
        Endpoint("127.0.0.1", i, f"http://127.0.0.1:{i}").write(path)
    else:
        write_json(path, {"writer": sys.argv[4], "i": i, "pad": "x" * 2000})
"""


@pytest.mark.parametrize("kind", ["endpoint", "json"])
def test_many_processes_writing_one_file_never_collide_nor_tear_it(kind: str, tmp_path: Path) -> None:
    """Three writers, 800 writes each, one reader all along: no writer fails, every read is whole JSON
    (endpoint.json, registry entries, baselines and prepared-collection marks all write this way)."""
    target = tmp_path / "shared.json"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, kind, str(target), "800", str(w)],
                                stderr=subprocess.PIPE, text=True) for w in range(3)]  # fmt: skip
    reads = 0
    while any(w.poll() is None for w in writers):
        if target.exists():
            json.loads(target.read_text())  # never half a file
            reads += 1
    errors = [w.stderr.read() for w in writers if w.wait() != 0]  # type: ignore[union-attr]
    assert errors == [] and reads > 10
    assert not list(tmp_path.glob("*.tmp"))  # every temporary name was renamed into place


def _entry(host: str, pid: int) -> registry.Entry:
    return registry.Entry(id=f"svc-{host}", recipe="svc", orchestrator="local", endpoint=Endpoint("h", 1, "http://h:1"),
                          run_dir="/tmp/x", log_path=None, command=["x"], handle={"pid": pid, "create_time": 1.0},
                          started="2026-12-01T00:00:00", host=host)  # fmt: skip


def test_a_shared_registry_prunes_only_what_runs_on_this_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "UBENCHAI_STATE_DIR": str(tmp_path)}
    monkeypatch.setenv("UBENCHAI_STATE_DIR", str(tmp_path))
    dead = 2**22 + 12345  # no such pid
    registry.save(_entry("login-other", dead))  # runs on another login node: cannot be checked from here
    registry.save(_entry(os.uname().nodename, dead))  # ours, and gone: pruned

    def ubenchai(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest_ubench", *args], env=env, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip

    listed = ubenchai("server", "list")
    assert "on login-other (not checked from this host)" in listed.stdout and "entry removed" in listed.stdout
    assert [e.id for e in registry.all_entries()] == ["svc-login-other"]
    stopped = ubenchai("server", "stop", "svc-login-other")
    assert stopped.returncode == 2 and "runs on login-other: run 'ubenchai server stop svc-login-other' there" in (
        stopped.stderr
    )
    assert asdict(registry.get("svc-login-other"))["host"] == "login-other"  # still there


def test_the_exact_answers_cache_is_this_users_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UBENCHAI_CACHE_DIR", str(tmp_path / "cache"))
    spec = vdb.VectorSearch("chroma", "http://x", dim=4, count=200, queries=10, seed=4242)
    truth = vdb.query_plan(spec)
    path = vdb._truth_cache(spec)
    assert path.is_relative_to(tmp_path / "cache") and (path.parent.stat().st_mode & 0o777) == 0o700
    # A planted file in the answer's place (wrong answers under a wrong key) is not believed.
    np.savez(path, group_of=np.full(10, -1), ids=np.zeros(100, int), ends=np.arange(10, 110, 10), key=np.array("x"))
    again = vdb.query_plan(spec)
    assert all(np.array_equal(a, b) for a, b in zip(truth[1], again[1], strict=True))
    # A cache directory others may write to is not used at all (answers computed, nothing read or written).
    path.parent.chmod(0o777)
    before = path.stat().st_mtime_ns
    time.sleep(0.01)
    third = vdb.query_plan(spec)
    assert all(np.array_equal(a, b) for a, b in zip(truth[1], third[1], strict=True))
    assert path.stat().st_mtime_ns == before


def test_credentials_never_leave_a_url() -> None:
    assert without_credentials("http://alice:s3cret@host:8000/v1") == "http://host:8000/v1"
    assert without_credentials("https://token@[::1]:9/x?y=1") == "https://[::1]:9/x?y=1"
    assert without_credentials("http://host:8000") == "http://host:8000"
