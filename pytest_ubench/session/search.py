"""``mode: search``: the highest load (rate or concurrency) that still meets the SLOs, probe by probe."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from loguru import logger

from ..load import engine
from ..metrics import search, slo
from ..orchestrators.base import Deployment
from ..recipes.sweep import Case
from .measure import Measured, judge, measure
from .plans import plan_for
from .services import Services

SATURATED_E2E_S = 10.0


def _probe_case(case: Case, value: float) -> Case:
    over = case.load.over
    load = case.load.model_copy(
        update={
            "mode": "open" if over == "rate" else "closed",
            over: value if over == "rate" else int(value),
            "low": None,
            "high": None,
            "slo": [],
        }
    )
    return Case(case.loaded, load, {**case.point, over: value})


def run_search(
    case: Case,
    services: Services,
    dep: Deployment,
    run_dir: Path,
    progress: engine.Progress | None,
    phases: dict[str, Any] | None,
) -> tuple[Measured | None, list[slo.Verdict], dict[str, Any]]:
    load = case.load
    slos = load.slo or case.recipe.slo
    duration = load.probe_s or case.recipe.workload.duration_s
    assert load.low is not None and load.high is not None
    best: dict[str, Any] = {}

    # Clearly saturated: by Little's law (in flight = rate x end-to-end latency), this many requests in
    # flight means a mean end-to-end latency of twice the E2E bound (10 s without one); the probe stops
    # there instead of queueing for its whole duration.
    e2e_bounds = [b[1] / 1000.0 for s in slos if (b := s.per_request_bound) is not None and b[0] == "e2e_ms"]
    saturated_after_s = 2 * max(e2e_bounds) if e2e_bounds else SATURATED_E2E_S

    def probe(value: float) -> search.Probe:
        pcase = _probe_case(case, value)
        logger.info("{}: probe {} = {:g}", case.id, load.over, value)
        planned = plan_for(pcase, dep.endpoint, duration)
        planned.phases = phases
        if load.over == "rate" and isinstance(planned.plan, engine.LoadPlan):
            limit = max(16, math.ceil(value * saturated_after_s))
            planned.plan = replace(planned.plan, saturated_in_flight=limit)
        m = measure(pcase, services, dep, planned, run_dir, progress)
        if m.run.aborted == "interrupted":
            raise KeyboardInterrupt
        saturated = bool(m.run.aborted and m.run.aborted.startswith("saturated"))
        verdicts = judge(pcase, m, slos)
        passed = (
            all(v.passed for v in verdicts)
            and m.service_failure is None
            and m.summary["requests"]["ok"] > 0
            and not saturated
        )
        if passed and value >= best.get("value", -1.0):
            best.update(value=value, measured=m, verdicts=verdicts)
        t, met = m.summary["throughput"], m.summary["metrics"]
        figures = {
            "requests_per_s": t["requests_per_s"],
            "output_tokens_per_s": t["output_tokens_per_s"],
            "ttft_p95_ms": met["ttft_ms"]["p95"],
            "e2e_p95_ms": met["e2e_ms"]["p95"],
            "error_rate": m.summary["requests"]["error_rate"],
            "failed_slos": [v.describe() for v in verdicts if not v.passed],
        }
        if saturated:
            figures["stopped"] = m.run.aborted
        return search.Probe(value, passed, figures, saturated)

    found = search.find_max(probe, load.over, load.low, load.high, load.precision, integer=load.over == "concurrency")
    info = found.to_json()
    if "measured" not in best:
        return None, [slo.Verdict(f"max {load.over} under SLO", None, f">= {load.low:g}", False, found.note)], info
    return best["measured"], best["verdicts"], info
