"""Baselines: a run's per-case results and raw records kept in a directory (commit it, or cache it in
CI), and the gate that compares a new case with its baseline (:mod:`pytest_ubench.metrics.compare`).

Layout: ``<baseline dir>/<case id>/{results.json, records.jsonl}``; a baseline named ``NAME`` lives in
``UBENCHAI_BASELINE_DIR`` (default ``ubench-baselines/``) + ``NAME``, or give a path to any directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import compare, results
from .results import RECORDS, RESULTS, CaseResult, ResultsDir

FILES = (RESULTS, RECORDS)


def resolve(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.is_dir() or os.sep in name_or_path:
        return path
    return Path(os.environ.get("UBENCHAI_BASELINE_DIR", "ubench-baselines")) / name_or_path


def save(case_dir: Path, baseline: Path) -> Path:
    """Copy one case's results into the baseline, replacing that case's earlier copy as a whole."""
    baseline.mkdir(parents=True, exist_ok=True)
    dest = baseline / case_dir.name
    tmp = Path(tempfile.mkdtemp(prefix=f".{case_dir.name}.", dir=baseline))
    try:
        for name in FILES:
            shutil.copy2(case_dir / name, tmp / name)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _samples(case_dir: Path) -> dict[str, Any]:
    case = CaseResult.read(case_dir)
    return compare.samples(case.records(), float(case.result["throughput"]["elapsed_s"]))


def compare_dirs(
    baseline_case: Path, case_dir: Path, thresholds: Mapping[str, float], alpha: float
) -> list[compare.Comparison]:
    """``thresholds``: the smallest relative change per metric that counts (a recipe's ``regression``)."""
    return compare.compare(_samples(baseline_case), _samples(case_dir), thresholds, alpha)


def gate(
    case_dir: Path, baseline: Path, thresholds: Mapping[str, float], alpha: float
) -> list[compare.Comparison] | None:
    """Compare a case with its baseline and record the comparison in its results.

    None when the baseline has no such case (a new sweep point): nothing to gate on, said in results.
    """
    stored = ResultsDir(baseline)
    baseline_case = stored.case_dir(case_dir.name)
    if not stored.has(case_dir.name):
        results.update(case_dir, baseline={"path": str(baseline_case), "note": "no baseline for this case"})
        return None
    comparisons = compare_dirs(baseline_case, case_dir, thresholds, alpha)
    results.update(case_dir, baseline={"path": str(baseline_case), "regressed": bool(compare.regressions(comparisons)),
                                       "comparisons": [c.as_dict() for c in comparisons]})  # fmt: skip
    return comparisons
