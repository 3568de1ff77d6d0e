"""Baselines: each case's run-level figures over several runs, kept in a small directory (commit it, or
cache it in CI), and the gate that compares a new case with them (:mod:`pytest_ubench.metrics.compare`).

Layout: ``<baseline dir>/<case id>/baseline.json`` (schema ``ubench.baseline/1``: the machine it was
measured on, and up to ``KEEP`` runs, newest last, each its figures and its ten time windows) beside the
newest run's ``results.json`` (the summary). Saving appends the case's runs (one, or one per repeat), so
a baseline grows by accumulation as well as by ``--ubench-baseline-runs``. No per-request records are
kept: a case of a minute at 100 req/s costs a few KB. A baseline named ``NAME`` lives in
``UBENCHAI_BASELINE_DIR`` (default ``ubench-baselines/``) + ``NAME``; any path works too, and so does a
results directory (its cases' runs are the baseline).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import compare, results
from .files import read_json, write_json
from .results import RESULTS, CaseResult, ResultsDir

BASELINE = "baseline.json"
SCHEMA = "ubench.baseline/1"
KEEP = 20  # runs kept per case, newest: old runs on old code stop speaking for the machine


def resolve(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_dir() or os.sep in name_or_path:
        return path
    return Path(os.environ.get("UBENCHAI_BASELINE_DIR", "ubench-baselines")) / name_or_path


def machine(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two figures comparable: the same kind of machine (CPU model and count, architecture)."""
    return {k: provenance.get(k) for k in ("cpu_model", "cpu_count", "machine")}


def save(case_dir: Path, baseline: Path) -> Path:
    """Add one case's runs to its baseline (a new baseline when there is none, or one from another kind
    of machine, which cannot speak for this one)."""
    case = CaseResult.read(case_dir)
    dest = baseline / case_dir.name
    here = machine(case.result["provenance"])
    stored = _stored(dest)
    earlier = stored["runs"] if stored and stored.get("machine") == here else []
    now = datetime.now(UTC).isoformat(timespec="seconds")
    version = case.result["provenance"].get("tool_version")
    added = [{"saved": now, "tool_version": version} | r.as_dict() for r in _runs(case)]
    write_json(dest / BASELINE, {"schema": SCHEMA, "case_id": case.case_id, "machine": here,
                                 "runs": (earlier + added)[-KEEP:]})  # fmt: skip
    shutil.copyfile(case_dir / RESULTS, dest / f".{RESULTS}.tmp")
    os.replace(dest / f".{RESULTS}.tmp", dest / RESULTS)
    return dest


def _stored(case_dir: Path) -> dict[str, Any] | None:
    path = case_dir / BASELINE
    data = read_json(path) if path.exists() else None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


def _runs(case: CaseResult) -> list[compare.RunFigures]:
    """A written case's runs: as its results say (``per_run``), or, for results written before they
    did, from its records (one run)."""
    if (per_run := case.result.get("per_run")) is not None:
        return [compare.RunFigures.from_dict(r) for r in per_run]
    records = case.records().measured
    if not len(records):
        return []
    start, end = float(records.at("intended").min()), float(records.at("intended").max())
    return [compare.run_figures(case.result, records, start, end)]


def case_dirs(root: Path) -> list[Path]:
    """The cases of a baseline (or of a results directory used as one)."""
    return sorted({p.parent for p in root.glob(f"*/{BASELINE}")} | set(ResultsDir(root).case_dirs()))


def baseline_runs(case_dir: Path) -> tuple[list[compare.RunFigures], dict[str, Any] | None]:
    """A baseline case's runs and the machine they were measured on (a results directory's case works
    too: its own runs)."""
    if (stored := _stored(case_dir)) is not None:
        return [compare.RunFigures.from_dict(r) for r in stored["runs"]], stored.get("machine")
    case = CaseResult.read(case_dir)
    return _runs(case), machine(case.result["provenance"])


def compare_dirs(
    baseline_case: Path, case_dir: Path, thresholds: Mapping[str, float], alpha: float, min_abs: Mapping[str, float]
) -> tuple[list[compare.Comparison], str | None]:
    """The comparison, and why it cannot gate when it cannot (another kind of machine)."""
    base, base_machine = baseline_runs(baseline_case)
    current = CaseResult.read(case_dir)
    here = machine(current.result["provenance"])
    comparisons = compare.compare(base, _runs(current), thresholds, alpha, min_abs)
    if base_machine is not None and base_machine != here:
        return (
            comparisons,
            f"the baseline was measured on another kind of machine ({base_machine} vs {here}): not gated",
        )
    return comparisons, None


def gate(
    case_dir: Path, baseline: Path, thresholds: Mapping[str, float], alpha: float, min_abs: Mapping[str, float]
) -> tuple[list[compare.Comparison], str | None] | None:
    """Compare a case with its baseline and record the comparison in its results: the comparisons and,
    when they cannot gate, why (a baseline from another kind of machine). None when the baseline has no
    such case (a new sweep point): nothing to gate on, said in results."""
    stored = ResultsDir(baseline)
    baseline_case = stored.case_dir(case_dir.name)
    if not (baseline_case / BASELINE).exists() and not stored.has(case_dir.name):
        results.update(case_dir, baseline={"path": str(baseline_case), "note": "no baseline for this case"})
        return None
    comparisons, refused = compare_dirs(baseline_case, case_dir, thresholds, alpha, min_abs)
    regressed = bool(compare.regressions(comparisons)) and refused is None
    part: dict[str, Any] = {"path": str(baseline_case), "regressed": regressed,
                            "comparisons": [c.as_dict() for c in comparisons]}  # fmt: skip
    if refused:
        part["note"] = refused
    results.update(case_dir, baseline=part)
    return comparisons, refused


def note_confirmation(case_dir: Path, runs: list[list[compare.Comparison]], asked: int) -> None:
    """Record the runs that re-measured a flagged case (``<case>/confirm/runN``): the case regressed only
    when every one of them was flagged too."""
    part = dict(CaseResult.read(case_dir).result["baseline"])
    confirmed = all(compare.regressions(c) for c in runs)  # the first flag stands unless a run clears it
    part["confirmation"] = {"asked": asked, "runs": [{"regressed": bool(compare.regressions(c)),
                            "comparisons": [x.as_dict() for x in c]} for c in runs]}  # fmt: skip
    part["regressed"] = confirmed
    results.update(case_dir, baseline=part)
