"""A case's results document: the part every result starts with, and the partial one a long run writes at
each checkpoint (replaced by the whole one when it ends)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .._version import __version__
from ..metrics.live import Live
from ..metrics.names import LATENCY_METRICS, PERCENTILES
from ..metrics.results import RECORDS, SCHEMA_VERSION, provenance
from ..recipes.sweep import Case


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def head(case: Case, started: float, finished: float, command: list[str] | None, endpoint: str) -> dict[str, Any]:
    """What was run, where and when (``started``/``finished``: epoch seconds)."""
    return {
        "schema": SCHEMA_VERSION,
        "case_id": case.id,
        "recipe": {
            "name": case.recipe.name,
            "path": str(case.loaded.path),
            "sha256": case.loaded.sha256,
            "resolved": case.recipe.model_dump(mode="json"),
        },
        "provenance": provenance(__version__, iso(started), iso(finished), command),
        "endpoint": endpoint,
    }


def partial(
    case: Case, started: float, now: float, command: list[str] | None, endpoint: str, live: Live, elapsed_s: float
) -> dict[str, Any]:
    """The figures so far of a run still going (a valid result, marked ``partial``; nothing judged yet)."""
    figures = live.figures(elapsed_s)
    empty = {"count": 0, "mean": None, "min": None, **dict.fromkeys(PERCENTILES), "max": None}
    return head(case, started, now, command, endpoint) | {
        "load": {"mode": case.load.mode, **case.point, "warmup_requests": live.warmup},
        **figures,
        "failed_metrics": dict.fromkeys(LATENCY_METRICS, empty),
        "slo": [],
        "passed": False,
        "aborted": f"still running at the last checkpoint, {elapsed_s:.0f} s into the measured window",
        "service_failure": None,
        "monitoring": None,
        "records_file": RECORDS,
        "partial": {
            "at_s": elapsed_s,
            "note": "figures so far, latencies from running histograms (within 1 %); nothing judged: the run "
            "had not ended when this was written",
        },
    }
