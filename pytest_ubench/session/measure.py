"""One load run of a case and everything computed from it: where the load runs (this process, worker
processes, a Slurm client job), the figures, the steady window, ramp steps, the client's self-check
and the server-side series over the same window."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from loguru import logger

from ..load import engine, parallel, routing
from ..load.planning import Planned, Tool, ToolContext
from ..metrics import client_check, scaling, slo, stats, steady
from ..metrics.columns import Records
from ..metrics.files import write_json
from ..metrics.live import Live
from ..metrics.record_files import PARTS
from ..metrics.results import RESULTS
from ..orchestrators import front
from ..orchestrators.base import Deployment, ServiceState, address
from ..recipes.sweep import Case
from . import clients as slurm_clients
from . import document
from .services import Services


@dataclass
class Measured:
    """One load run and everything computed from it."""

    run: engine.Run
    summary: dict[str, Any]
    extras: dict[str, Any]  # dataset, steady_state, stages, client
    monitoring: dict[str, Any] | None
    service_failure: str | None
    endpoint: str  # what was measured
    command: list[str] | None  # what ran it: the service's command, or the tool's
    failed_checks: dict[str, str] = field(default_factory=dict)  # a tool's own checks (its expression: why)


def _load_run(
    case: Case,
    services: Services,
    dep: Deployment,
    plan: engine.LoadPlan,
    run_dir: Path,
    progress: engine.Progress | None,
) -> engine.Run:
    if case.recipe.workload.orchestration == "slurm":
        orch = services.orchestrator
        clients = run_dir / ("clients" if not case.repeat else f"clients-run{case.repeat + 1}")
        return slurm_clients.run(case, dep.run_dir / "endpoint.json", clients, orch, progress)
    target = [routing.Target.of_url(url) for url in dep.endpoint.load_urls]
    plan = replace(plan, spill_dir=run_dir / PARTS / f"run{case.repeat + 1}")
    checkpoint = _checkpointer(case, dep, run_dir)
    workers = parallel.worker_count(case.load.workers)
    watch = services.monitoring
    if workers > 1:
        if watch is not None and watch.observer is not None:
            logger.info(
                "{}: {} client processes: the client's live Prometheus series are not exported", case.id, workers
            )
        return parallel.run(target, plan, workers, progress, checkpoint)
    return engine.run(target, plan, progress, watch.observer if watch else None, checkpoint=checkpoint)


def _checkpointer(case: Case, dep: Deployment, run_dir: Path) -> engine.Checkpoint:
    """Writes the figures so far as the case's results.json (partial), which the finished run replaces."""
    started = time.time()

    def write(live: Live, elapsed_s: float) -> None:
        doc = document.partial(case, started, time.time(), dep.command, dep.endpoint.url, live, elapsed_s)
        try:
            write_json(run_dir / RESULTS, doc)
        except OSError as exc:  # a full disk: the run goes on; its end will say so (exit 4)
            logger.warning("{}: checkpoint not written: {}", case.id, exc.strerror or exc)

    return write


def measure(
    case: Case,
    services: Services,
    dep: Deployment | None,
    planned: Planned,
    run_dir: Path,
    progress: engine.Progress | None,
) -> Measured:
    plan = planned.plan
    if not isinstance(plan, engine.LoadPlan):
        return _tool_run(case, services, plan, run_dir, progress)
    assert dep is not None
    run = _load_run(case, services, dep, plan, run_dir, progress)
    measured = run.measured
    service_failure = None
    if not services.alive(dep):
        service_failure = (
            f"service {dep.name} exited (code {dep.exit_code}) during the run\n"
            f"--- last lines of {dep.log_path} ---\n{services.orchestrator.logs(dep)}"
        )
    elif run.aborted and run.aborted.startswith("target unreachable"):
        service_failure = f"{dep.endpoint.url}: {run.aborted}; the run was stopped early"
    bounds = slo.bounds(case.recipe.slo)
    summary = stats.summary(measured, run.window_start, run.window_end, bounds)
    if case.recipe.service is not None and case.recipe.service.replicas != 1:
        summary["replicas"] = _replicas(case, services, dep, run)
    if planned.phases is not None:
        summary["phases"] = planned.phases
    extras: dict[str, Any] = {"dataset": planned.dataset}
    extras["client"] = client_check.check(run.client, run.records, plan.mode, run.window_start, run.window_end)
    if run.clocks:
        extras["client"]["clocks"] = run.clocks
    if run.aborted != "interrupted":
        extras["steady_state"] = _steady(measured, run, bounds)
    if planned.stages:
        extras["stages"] = _stages(measured, run.window_start, planned, bounds)
    monitoring = None
    watch = services.monitoring
    if watch is not None and run.aborted != "interrupted":
        # The same window the throughput figures use: from the end of warm-up to the last completion.
        start = run.window_start + run.wall_t0 - run.t0  # perf_counter -> epoch seconds
        monitoring = watch.collect(case.recipe, run, start, start + summary["throughput"]["elapsed_s"])
    if monitoring is not None:
        summary["server_metrics"] = monitoring.pop("queries")
        if "replicas" in summary:
            _server_counts(summary["replicas"], monitoring.get("cross_check") or {})
    elif case.recipe.monitor is not None and case.recipe.monitor.enabled:
        note = watch.note if watch is not None else None
        monitoring = {"note": note or "server-side metrics were not collected"}
    return Measured(run, summary, extras, monitoring, service_failure, dep.endpoint.url, dep.command)


def _replicas(case: Case, services: Services, dep: Deployment, run: engine.Run) -> dict[str, Any]:
    """Each replica's figures, and those lost: found dead by a client (when), or ended by the orchestrator's
    account though no client noticed."""
    lost: dict[int, float | None] = dict(run.lost)
    members = services.members(dep)
    for m in members:
        if m.state in (ServiceState.FAILED, ServiceState.STOPPED):
            lost.setdefault(m.index, None)
    rule = case.recipe.service.routing if case.recipe.service is not None else ""
    urls = dep.endpoint.urls
    if dep.endpoint.balanced:  # through nginx: its access log says which replica served what
        counts = front.served(dep.run_dir / "front", dep.endpoint.addresses, run.wall_t0, run.wall_t1 + 1.0)
        part = scaling.per_replica_from_front(counts, urls, run.wall_t1 - run.wall_t0, lost, rule)
    else:
        part = scaling.per_replica(run.measured, run.window_start, run.window_end, urls, lost, rule)
    for each, m in zip(part["per_replica"], members, strict=False):
        each |= {"state": str(m.state), "exit_code": m.exit_code}
    return part


def _server_counts(part: dict[str, Any], checks: dict[str, Any]) -> None:
    """Each replica's own counters (Prometheus, per scraped instance) beside its figures."""
    for each in part["per_replica"]:
        host, port = address(each["url"])
        instance = f"{host}:{port}"  # as the target was added (Prometheus.add_target)
        counts = {
            name: c["by_instance"][instance] for name, c in checks.items() if instance in c.get("by_instance", {})
        }
        if counts:
            each["server_counts"] = counts


def _tool_run(case: Case, services: Services, tool: Tool, run_dir: Path, progress: engine.Progress | None) -> Measured:
    """A protocol that generates and measures its load with its own tool: its figures, as it gives them."""
    tasks = services.orchestrator if case.recipe.workload.orchestration == "slurm" else None
    out = tool(ToolContext(run_dir, tasks, progress, services.orchestrator.placeholders()))
    busy = out.summary["throughput"]["elapsed_s"]
    run = engine.Run(Records.empty(), 0.0, out.wall_t0, 0.0, busy, wall_t1=out.wall_t1, aborted=out.aborted)
    return Measured(run, out.summary, {"dataset": out.dataset}, None, None, out.endpoint, out.command,
                    out.failed_checks)  # fmt: skip


def _steady(measured: Records, run: engine.Run, bounds: list[tuple[str, float]]) -> dict[str, Any]:
    """The stable window (MSER-5) and the figures over it, beside the whole run's."""
    win = steady.window(measured, run.window_start, run.window_end)
    lo, hi = run.window_start + win["start_s"], run.window_start + win["end_s"]
    at = measured.at("intended")
    inside = measured.take((lo <= at) & (at < hi))
    part = stats.summary(inside, lo, hi, bounds)
    return win | {"requests": part["requests"], "metrics": part["metrics"], "throughput": part["throughput"]}


def _stages(measured: Records, start: float, planned: Planned, bounds: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """Figures per step of a ramp: a whole capacity curve from one run."""
    out = []
    at = measured.at("intended")
    for st in planned.stages:
        end = start + st.duration_s
        part = stats.summary(measured.take((start <= at) & (at < end)), start, end, bounds)
        out.append(
            {
                "rate": st.rate,
                "duration_s": st.duration_s,
                "requests": part["requests"],
                "metrics": part["metrics"],
                "throughput": part["throughput"],
            }
        )
        start = end
    return out


def _client_verdict(client: dict[str, Any], strict: bool) -> list[slo.Verdict]:
    """A client that was likely the bottleneck warns in the verdicts (fails with ``strict_client``)."""
    if not client.get("bottleneck"):
        return []
    note = "; ".join(client["reasons"]) + ("" if strict else " (warning; strict_client: true fails it)")
    return [slo.Verdict("client is not the bottleneck", client.get("cpu_busy_max"), "cpu <= 0.8", not strict, note)]


def _lost_verdict(part: dict[str, Any] | None, slos: list[slo.SLO]) -> list[slo.Verdict]:
    """A replica lost during the load fails the case, unless the recipe says how many it may lose (an SLO on
    ``replicas.lost``, for a run that kills one on purpose)."""
    if not part or not part["lost"] or any(s.path == "replicas.lost" for s in slos):
        return []
    said = []
    for each in part["per_replica"]:
        if each["lost_at_s"] is not None or each.get("state") in ("failed", "stopped"):
            when = f"{each['lost_at_s']:.1f} s into the load" if each["lost_at_s"] is not None else "during the run"
            code = f", exit code {each['exit_code']}" if each.get("exit_code") is not None else ""
            said.append(f"replica {each['replica']} ({each['url']}) lost {when}{code}")
    return [slo.Verdict("every replica served to the end", part["lost"], "0 lost", False, "; ".join(said))]


def judge(case: Case, m: Measured, slos: list[slo.SLO]) -> list[slo.Verdict]:
    verdicts = slo.judge(slos, m.summary, case.recipe.strict_samples)
    verdicts += _lost_verdict(m.summary.get("replicas"), slos)
    verdicts += _client_verdict(m.extras.get("client") or {}, case.recipe.strict_client)
    return verdicts + [slo.Verdict(check, None, "no error", False, why) for check, why in m.failed_checks.items()]
