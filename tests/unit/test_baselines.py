"""The baseline store: small (run-level figures, no records), bounded (the newest 20 runs), grown by
accumulation, and tied to the kind of machine it was measured on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pytest_ubench.metrics import baselines
from pytest_ubench.metrics.compare import RunFigures

MACHINE = {"cpu_model": "Test CPU 3000", "cpu_count": 2, "machine": "x86_64"}


def write_case(root: Path, ttft: list[float], machine: dict[str, Any] = MACHINE, name: str = "c-concurrency=2") -> Path:
    """A written case as ``session/case.py`` leaves it: results.json with its runs (``per_run``) and a
    records file that a baseline must not copy."""
    rng = np.random.default_rng(len(ttft))
    per_run = [
        RunFigures({"ttft_ms": t, "itl_ms": 5.0}, {"ttft_ms": list(t * rng.normal(1, 0.02, 10))}).as_dict()
        for t in ttft
    ]
    case = root / name
    case.mkdir(parents=True)
    doc = {"case_id": name, "provenance": {"tool_version": "t", **machine}, "per_run": per_run, "slo": []}
    (case / "results.json").write_text(json.dumps(doc))
    (case / "records.parquet").write_bytes(b"PAR1" * 5000)  # a big file, never copied
    return case


def test_a_baseline_keeps_runs_not_records_and_says_its_schema_and_machine(tmp_path: Path) -> None:
    case = write_case(tmp_path / "results", [50.0, 51.0, 49.5, 50.5, 50.2])
    dest = baselines.save(case, tmp_path / "bl")
    stored = json.loads((dest / "baseline.json").read_text())
    assert stored["schema"] == "ubench.baseline/1" and stored["machine"] == MACHINE
    assert [r["figures"]["ttft_ms"] for r in stored["runs"]] == [50.0, 51.0, 49.5, 50.5, 50.2]
    assert not (dest / "records.parquet").exists() and (dest / "results.json").exists()
    assert (dest / "baseline.json").stat().st_size < 5 * 2000  # about a KB per run


def test_saving_accumulates_up_to_the_newest_twenty_runs(tmp_path: Path) -> None:
    bl = tmp_path / "bl"
    for i in range(5):
        baselines.save(write_case(tmp_path / f"r{i}", [float(10 * i + k) for k in range(7)]), bl)
    runs, machine = baselines.baseline_runs(bl / "c-concurrency=2")
    assert machine == MACHINE
    assert [r.figures["ttft_ms"] for r in runs] == [float(10 * i + k) for i in range(5) for k in range(7)][-20:]


def test_runs_from_another_kind_of_machine_are_replaced_not_mixed(tmp_path: Path) -> None:
    bl = tmp_path / "bl"
    baselines.save(write_case(tmp_path / "a", [50.0, 51.0], {**MACHINE, "cpu_model": "Other CPU"}), bl)
    baselines.save(write_case(tmp_path / "b", [60.0, 61.0]), bl)
    runs, machine = baselines.baseline_runs(bl / "c-concurrency=2")
    assert machine == MACHINE and [r.figures["ttft_ms"] for r in runs] == [60.0, 61.0]


def test_a_baseline_from_another_kind_of_machine_does_not_gate(tmp_path: Path) -> None:
    bl = tmp_path / "bl"
    baselines.save(write_case(tmp_path / "a", [50.0, 50.5, 49.8, 50.2, 50.1], {**MACHINE, "cpu_count": 64}), bl)
    slow = write_case(tmp_path / "now", [80.0])
    gated = baselines.gate(slow, bl, 0.10, 0.01, {})
    assert gated is not None
    comparisons, note = gated
    assert note is not None and "another kind of machine" in note
    assert {c.metric: c.verdict for c in comparisons}["ttft_ms"] == "regression"  # shown, not gated
    written = json.loads((slow / "results.json").read_text())["baseline"]
    assert written["regressed"] is False and "another kind of machine" in written["note"]


def test_the_same_machine_gates_and_a_new_case_is_noted(tmp_path: Path) -> None:
    bl = tmp_path / "bl"
    baselines.save(write_case(tmp_path / "a", [50.0, 50.5, 49.8, 50.2, 50.1]), bl)
    slow = write_case(tmp_path / "now", [80.0])
    gated = baselines.gate(slow, bl, 0.10, 0.01, {})
    assert gated is not None and gated[1] is None
    assert json.loads((slow / "results.json").read_text())["baseline"]["regressed"] is True
    new = write_case(tmp_path / "now", [50.0], name="c-concurrency=4")
    assert baselines.gate(new, bl, 0.10, 0.01, {}) is None
    assert "no baseline" in json.loads((new / "results.json").read_text())["baseline"]["note"]
