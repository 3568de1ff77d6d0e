"""Run one case against its (possibly already deployed) service: plan, load (repeated, or searched),
judge the SLOs, write results.json and the raw records."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from .. import protocols
from ..load import engine
from ..metrics import repeats, scaling, slo, stats
from ..metrics.columns import Records
from ..metrics.compare import run_figures
from ..metrics.results import RECORDS, CaseResult, ResultsDir, ResultsError
from ..orchestrators.base import Deployment
from ..recipes.schema import Ramp
from ..recipes.sweep import Case
from . import document
from .measure import Measured, judge, measure
from .plans import plan_for
from .search import run_search
from .services import Services

# Parts of a run's summary that pooling repeats does not recompute: the last run's stand.
_KEPT_FROM_LAST = ("server_metrics", "phases", "replicas")


def run_case(
    case: Case,
    services: Services,
    progress: engine.Progress | None = None,
    runs: int | None = None,
    into: Path | None = None,
) -> CaseResult:
    """Run one case against its (possibly already deployed) service and write its results; ``runs``: a
    baseline being saved, this many runs, each after the first on a fresh deployment (its spread must be
    the one between sessions: measured on the main job at concurrency 4, 0.7 req/s between runs on one
    server, 1.8 between fresh ones); ``into``: another results root than the session's (a gate's
    confirmation run)."""
    dep = services.get(case) if case.recipe.service is not None else None
    run_dir = (ResultsDir(into) if into is not None else services.results).case_dir(case.id)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"{case.id}: cannot create {run_dir}: {exc.strerror or exc}") from None
    with services.load_turn(dep):
        repeat = max(case.recipe.workload.repeat, runs or 1)
        main, measured, verdicts, extra = _measure_case(
            case, services, dep, run_dir, progress, repeat, runs is not None
        )
    return _write_case(case, run_dir, main, measured, verdicts, extra)


def _measure_case(
    case: Case,
    services: Services,
    dep: Deployment | None,
    run_dir: Path,
    progress: engine.Progress | None,
    repeat: int,
    fresh: bool = False,
) -> tuple[Measured, list[Measured], list[slo.Verdict], dict[str, Any]]:
    """The case's load: repeated (and pooled; ``fresh``: each repeat on a new deployment), or searched;
    and its verdicts."""
    extra: dict[str, Any] = {}
    endpoint = dep.endpoint if dep is not None else None
    phases = services.prepare(case, dep) if dep is not None else None
    logger.info("{}: {} load against {}", case.id, case.load.mode, endpoint.url if endpoint else "no service")
    if case.load.mode == "search":
        assert dep is not None
        found, verdicts, extra["search"] = run_search(case, services, dep, run_dir, progress, phases)
        runs = [found] if found is not None else []
        # No probe passed: the lowest probe's figures are in the search part.
        empty = engine.Run(Records.empty(), 0.0, 0.0, 0.0, 0.0)
        main = found or Measured(
            empty, stats.summary(empty.records, 0.0, 0.0), {}, None, None, dep.endpoint.url, dep.command
        )
    else:
        runs = []
        for i in range(repeat):
            if i:
                logger.info("{}: {} {}/{}", case.id, "baseline run" if fresh else "repeat", i + 1, repeat)
            if i and fresh and dep is not None:
                dep = services.redeploy(case)
                endpoint = dep.endpoint
                phases = services.prepare(case, dep)
            run_of = replace(case, repeat=case.repeat + i)  # its own prompts: not the ones the server cached
            planned = plan_for(run_of, endpoint)
            planned.phases = phases
            m = measure(run_of, services, dep, planned, run_dir, progress)
            runs.append(m)
            if m.run.aborted == "interrupted" or m.service_failure or not isinstance(planned.plan, engine.LoadPlan):
                break  # a protocol that measures with its own tool reports no per-run records to pool: once
        main = runs[-1]
        if len(runs) > 1:
            extra["repeats"] = _repeats(runs) | {"fresh_deployments": fresh}
            bounds = slo.bounds(case.recipe.slo)
            pooled = Records.concat([m.run.measured for m in runs])
            summary = stats.pooled([m.summary for m in runs], pooled, bounds)
            main = replace(
                main, run=runs[0].run,
                summary=summary | {k: v for k, v in main.summary.items() if k in _KEPT_FROM_LAST},
            )  # fmt: skip
        if (scaled := _scaling(case, main.summary, services.results)) is not None:
            main.summary["scaling"] = scaled
        verdicts = judge(case, main, case.recipe.slo)
    return main, runs, verdicts, extra


def _scaling(case: Case, summary: dict[str, Any], results: ResultsDir) -> dict[str, Any] | None:
    """Over a replica sweep, this count's throughput against the smallest count's at the same point (its
    case ran first: replicas are the outermost axis); None where there is no sweep or no such result."""
    spec = case.recipe.service
    if spec is None or not isinstance(spec.replicas, list) or not summary["requests"]["ok"]:
        return None
    smallest = min(spec.replicas)
    reference = replace(case, point=case.point | {"replicas": smallest}, repeat=0)
    if case.replicas == smallest:
        return scaling.efficiency(case.replicas, summary, smallest, summary, reference.id)
    if not results.has(reference.id):
        logger.warning("{}: no result of {} in {}: no scaling figures", case.id, reference.id, results.root)
        return None
    ref = CaseResult.read(results.case_dir(reference.id)).result
    return scaling.efficiency(case.replicas, summary, smallest, ref, reference.id)


def _repeats(runs: list[Measured]) -> dict[str, Any]:
    per_run = [m.summary for m in runs]
    return {
        "n": len(runs),
        "figures": repeats.across(per_run),
        "runs": [
            {
                "requests": s["requests"],
                "throughput": s["throughput"],
                "ttft_p50_ms": s["metrics"]["ttft_ms"]["p50"],
                "e2e_p95_ms": s["metrics"]["e2e_ms"]["p95"],
                "steady_state": {
                    k: v for k, v in m.extras.get("steady_state", {}).items() if k in ("start_s", "stable")
                },
            }
            for s, m in zip(per_run, runs, strict=True)
        ],
        "note": "figures above the repeats are pooled over every run; these give the spread between runs",
    }


def _write_case(
    case: Case,
    run_dir: Path,
    main: Measured,
    runs: list[Measured],
    verdicts: list[slo.Verdict],
    extra: dict[str, Any],
) -> CaseResult:
    run = main.run
    first = runs[0].run if runs else run
    records = Records.concat([m.run.records for m in runs], first.t0) if runs else run.records
    service_failure = main.service_failure
    shape: dict[str, Any] = {}
    if isinstance(case.load.rate, Ramp):
        shape["ramp"] = case.load.rate.model_dump(by_alias=True)
    if "search" in extra:
        shape[case.load.over] = extra["search"]["max_passing"]
    result = document.head(case, first.wall_t0, run.wall_t1, main.command, main.endpoint) | {
        "load": {
            "mode": case.load.mode,
            **case.point,
            **shape,
            "warmup_requests": int(np.count_nonzero(records["warmup"])),
        },
        **main.summary,
        **main.extras,
        **extra,
        "slo": [
            {
                "expression": v.expression,
                "measured": v.measured,
                "allowed": v.allowed,
                "passed": v.passed,
                "note": v.note,
            }
            for v in verdicts
        ],
        "passed": all(v.passed for v in verdicts) and service_failure is None,
        "aborted": run.aborted,
        "service_failure": service_failure,
        "monitoring": main.monitoring,
        "records_file": RECORDS,
        # Each run's own figures, for the baseline gate: one run, or one per repeat (tool runs have none).
        "per_run": [
            run_figures(m.summary, m.run.measured, m.run.window_start, m.run.window_end).as_dict()
            for m in runs
            if len(m.run.records)
        ],
    }
    _scrub_nan(result)
    ResultsDir(run_dir.parent).write(case.id, result, records, first.wall_t0)
    if run.aborted == "interrupted":
        raise KeyboardInterrupt
    unit = protocols.get(case.recipe.workload.protocol).rate_unit
    return CaseResult(case.id, run_dir, result, verdicts, service_failure, unit)


def _scrub_nan(obj: Any) -> None:
    """JSON has no NaN: a figure that does not exist is null."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        if isinstance(v, float) and not math.isfinite(v):
            obj[k] = None
        else:
            _scrub_nan(v)
