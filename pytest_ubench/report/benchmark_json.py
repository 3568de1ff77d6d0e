"""Results as pytest-benchmark JSON, so tools that chart pytest-benchmark files over time (e.g.
github-action-benchmark, ``pytest-benchmark compare``) take ubench runs unchanged.

Each case gives one "benchmark" per latency metric (TTFT, ITL per request, E2E), in seconds, with the
statistics pytest-benchmark computes for its own rounds; throughput, errors and the verdict go to
``extra_info``. Built from the results directory, so it works the same under pytest-xdist.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..metrics.columns import Records
from ..metrics.files import write_json
from ..metrics.results import RESULTS, ResultsDir, flat_figures

METRICS = ("ttft_ms", "itl_ms", "e2e_ms")


def _stats(seconds: np.ndarray) -> dict[str, Any]:
    q1, median, q3 = (float(v) for v in np.percentile(seconds, [25, 50, 75]))
    iqr = q3 - q1
    mean, std = float(seconds.mean()), float(seconds.std(ddof=1)) if len(seconds) > 1 else 0.0
    low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    iqr_out = int(((seconds < low) | (seconds > high)).sum())
    std_out = int(((seconds < mean - std) | (seconds > mean + std)).sum())
    return {
        "min": float(seconds.min()),
        "max": float(seconds.max()),
        "mean": mean,
        "stddev": std,
        "rounds": len(seconds),
        "median": median,
        "iqr": iqr,
        "q1": q1,
        "q3": q3,
        "iqr_outliers": iqr_out,
        "stddev_outliers": std_out,
        "outliers": f"{std_out};{iqr_out}",
        "ld15iqr": float(seconds[seconds >= low].min()),
        "hd15iqr": float(seconds[seconds <= high].max()),
        "ops": 1.0 / mean if mean else 0.0,
        "total": float(seconds.sum()),
        "iterations": 1,
    }


def _machine() -> dict[str, Any]:
    return {
        "node": platform.node(),
        "processor": platform.processor(),
        "machine": platform.machine(),
        "python_compiler": platform.python_compiler(),
        "python_implementation": platform.python_implementation(),
        "python_implementation_version": platform.python_version(),
        "python_version": platform.python_version(),
        "python_build": list(platform.python_build()),
        "release": platform.release(),
        "system": platform.system(),
        "cpu": {"count": os.cpu_count(), "brand_raw": platform.processor() or platform.machine()},
    }


def _per_request(records: Records) -> dict[str, np.ndarray]:
    """Each measured request's TTFT, mean ITL and E2E (ms): pytest-benchmark's "rounds"."""
    ok = records.take(records.ok & ~records["warmup"])
    values = ok.values()
    gaps = np.bincount(values.itl_row, minlength=len(ok))
    sums = np.bincount(values.itl_row, weights=values.itl_ms, minlength=len(ok))
    return {
        "ttft_ms": values.series("ttft_ms"),
        "itl_ms": sums[gaps > 0] / gaps[gaps > 0],
        "e2e_ms": values.e2e_ms,
    }


def build(root: Path, tests: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``tests``: the test function that ran each case (by case id), for pytest-benchmark's names
    (``test_chat[chat-concurrency=4]-ttft``); a case run outside pytest is named ``ubench``."""
    benchmarks = []
    for case in ResultsDir(root).cases():
        data = case.result
        samples = _per_request(case.records())
        extra = flat_figures(data) | {"results": str(case.run_dir / RESULTS)}
        for metric in METRICS:
            values = samples[metric]
            if len(values) == 0:
                continue
            test = (tests or {}).get(data["case_id"], "ubench")
            name = f"{test}[{data['case_id']}]-{metric.removesuffix('_ms')}"
            benchmarks.append({
                "group": data["case_id"], "name": name, "fullname": f"benchmarks/{name}",
                "params": {"case": data["case_id"], "metric": metric}, "param": f"{data['case_id']}-{metric}",
                "extra_info": extra, "options": {"timer": "perf_counter", "min_rounds": 1, "warmup": False},
                "stats": _stats(values / 1000.0),
            })  # fmt: skip
    return {
        "machine_info": _machine(),
        "commit_info": {"id": os.environ.get("GITHUB_SHA") or os.environ.get("CI_COMMIT_SHA") or "unversioned"},
        "benchmarks": benchmarks,
        "datetime": datetime.now(UTC).isoformat(),
        "version": f"pytest-ubench {__version__}",
    }


def write(path: Path, root: Path, tests: Mapping[str, str] | None = None) -> int:
    data = build(root, tests)
    write_json(path, data)
    return len(data["benchmarks"])
