"""Client tasks' clocks against the harness's (load/clock.py) and the merge that applies them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_ubench.load import clock
from pytest_ubench.metrics.columns import Records
from pytest_ubench.metrics.record_files import PARQUET, write_parquet
from pytest_ubench.metrics.records import Record
from pytest_ubench.session.clients import merge


def test_the_same_clock_is_measured_at_no_offset_within_its_bound() -> None:
    with clock.TimeServer() as server:
        found = clock.offset(f"127.0.0.1:{server.port}")
    assert 0 < found.error_s < 0.005
    assert abs(found.offset_s) <= found.error_s + 0.0005


def test_a_harness_clock_200_ms_ahead_is_measured_as_such() -> None:
    """The time server in a process of its own whose clock reads 200 ms ahead (patched there): the
    offset found is the injected one, to within the bound the exchange gives."""
    code = ("import sys, time; t = time.time_ns; time.time_ns = lambda: t() + 200_000_000\n"
            "from pytest_ubench.load.clock import TimeServer\n"
            "s = TimeServer(); print(s.port, flush=True); sys.stdin.read()")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        found = clock.offset(f"127.0.0.1:{port}")
    finally:
        proc.communicate("", timeout=10)
    assert found.offset_s == pytest.approx(0.2, abs=found.error_s + 0.0005)


def test_no_time_server_is_a_clock_error_in_bounded_time() -> None:
    with clock.TimeServer() as server:
        port = server.port  # closed again: nobody answers there
    began = time.monotonic()
    with pytest.raises(clock.ClockError, match=rf"time server 127.0.0.1:{port}: no answer to 3 requests"):
        clock.offset(f"127.0.0.1:{port}", probes=3, timeout_s=0.1)
    assert time.monotonic() - began < 2
    with pytest.raises(clock.ClockError, match=r"time server no-such-host\.invalid:1"):
        clock.offset("no-such-host.invalid:1")


def _task(out: Path, index: int, wall_t0: float, clock_info: dict[str, object], starts: list[float]) -> None:
    task = out / f"task-{index}"
    task.mkdir(parents=True)
    records = []
    for s in starts:
        rec = Record(s)
        rec.start = s
        rec.first = s + 0.01
        rec.end = s + 0.02
        rec.status = 200
        records.append(rec)
    write_parquet(task / PARQUET, Records.of(records))
    meta = {"task": index, "tasks": 3, "node": f"n{index + 1}", "wall_t0": wall_t0, "wall_t1": wall_t0 + 1,
            "window_start": 0.0, "window_end": 1.0, "aborted": None, "records": len(starts),
            "clock": clock_info}  # fmt: skip
    (task / "run.json").write_text(json.dumps(meta))


def test_the_merge_puts_each_task_on_the_harness_clock(tmp_path: Path) -> None:
    """Three tasks start a request at the same true instant (harness time 1000.0): task 0's clock reads 50 ms
    ahead, task 1's 50 ms behind, task 2's is right but could not be measured. After the merge the three
    requests start together, and the results say what was applied, and where it could not be."""
    ahead = {"start": {"offset_s": -0.05, "error_s": 0.0002}, "end": {"offset_s": -0.0507, "error_s": 0.0002}}
    behind = {"start": {"offset_s": 0.05, "error_s": 0.0003}, "end": {"offset_s": 0.05, "error_s": 0.0003}}
    _task(tmp_path, 0, 1000.05, ahead, [0.0])
    _task(tmp_path, 1, 999.95, behind, [0.0])
    _task(tmp_path, 2, 1000.0, {"start": "time server vm:1: no answer to 16 requests", "end": None}, [0.0])
    run = merge(tmp_path)
    assert run.wall_t0 == pytest.approx(1000.0)
    assert [r.start for r in run.records] == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    assert run.clocks[0] == {"task": 0, "node": "n1", "offset_ms": pytest.approx(-50), "error_ms": pytest.approx(0.2),
                             "drift_ms": pytest.approx(-0.7)}  # fmt: skip
    assert run.clocks[1]["offset_ms"] == pytest.approx(50) and run.clocks[1]["drift_ms"] == pytest.approx(0)
    assert run.clocks[2] == {"task": 2, "node": "n3", "offset_ms": None, "error_ms": None, "drift_ms": None,
                             "note": "time server vm:1: no answer to 16 requests"}  # fmt: skip
