"""The one place that runs a case: deploy, wait healthy, drive load, judge, write results.

``plugin.py`` and ``cli.py`` both call this module; neither repeats any of it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from time import time as time_now
from typing import Any
from urllib.parse import urlsplit

from filelock import FileLock
from loguru import logger

from . import fio, planning
from ._version import __version__
from .load import engine, parallel
from .metrics import client_check, repeats, results, search, slo, stats, steady
from .metrics.records import Record, write_jsonl
from .monitor.prometheus import Prometheus
from .monitor.watch import Monitoring
from .orchestrators.backends import get_orchestrator
from .orchestrators.base import (
    Deployment,
    Endpoint,
    Orchestrator,
    ServiceError,
    ServiceState,
    from_record,
    to_record,
)
from .orchestrators.health import probe, tcp_probe, wait_healthy
from .orchestrators.placeholders import expand
from .orchestrators.slurm import SlurmOrchestrator
from .planning import Planned
from .recipes.loader import LoadedRecipe
from .recipes.schema import Ramp, ServiceSpec
from .recipes.sweep import Case
from .slurm import clients as slurm_clients
from .slurm import fio_tasks


class TargetUnreachable(ServiceError):
    """The service to benchmark could not be reached at all (CLI exit code 3)."""


class ResultsError(Exception):
    """Results could not be written (a full or read-only disk); CLI exit code 4."""


def default_output_root() -> Path:
    return Path("ubench-results") / datetime.now().strftime("%Y%m%d-%H%M%S")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def service_dir(root: Path, name: str) -> Path:
    """Where a service's script, log and endpoint file live in a results directory."""
    return root / "services" / name


def deploy(orchestrator: Orchestrator, spec: ServiceSpec, name: str, run_dir: Path, detach: bool = False) -> Deployment:
    """Start a service and wait until it is healthy; on any failure nothing is left running."""
    dep = orchestrator.deploy(spec, name, run_dir, detach=detach)
    try:
        wait_healthy(orchestrator, dep, spec.health)
    except BaseException:
        orchestrator.stop(dep)
        raise
    return dep


class Services:
    """Deploys each recipe's service once and tears every one of them down on close.

    Sweep points of one recipe share a deployment: restarting a server between points would
    measure start-up, not load.
    """

    def __init__(
        self,
        root: Path,
        orchestrator: Orchestrator | str = "local",
        target_url: str | None = None,
        monitoring: bool = True,
        shared: bool = False,
    ) -> None:
        """``shared``: several processes (pytest-xdist workers) use one deployment per recipe under
        ``root``; the first deploys it, the others attach, and ``stop_shared`` ends it once all are done.
        """
        self.root = root
        self.shared = shared
        self.orchestrator = get_orchestrator(orchestrator) if isinstance(orchestrator, str) else orchestrator
        self.target_url = target_url
        # Each sharing process watches with its own Prometheus, in its own directory.
        monitor_root = root / f"monitor-{os.getpid()}" if shared else root
        self.monitoring = Monitoring(self.orchestrator, monitor_root) if monitoring else None
        self._deployed: dict[str, Deployment] = {}
        self._failed: dict[str, ServiceError] = {}

    def get(self, loaded: LoadedRecipe) -> Deployment:
        """The recipe's deployment, started on first use; a failed start is not retried per case."""
        key = loaded.recipe.name
        if key in self._failed:
            raise self._failed[key]
        if key not in self._deployed:
            try:
                dep = self._deploy(loaded)
            except ServiceError as exc:
                self._failed[key] = exc
                raise
            self._deployed[key] = dep
            try:
                if self.monitoring is not None:
                    self.monitoring.watch(loaded.recipe, dep)
            except ServiceError as exc:
                self._failed[key] = exc
                raise
        return self._deployed[key]

    def prepare(self, case: Case, dep: Deployment) -> dict[str, Any] | None:
        """A protocol's setup before load (a vector collection built, its exact answers computed), done
        once per deployment by the first case that needs it (in this process or, under xdist, any
        sharing one) and read back by the others: sweep points neither rebuild nor drop under each other
        what they share."""
        work = planning.preparation(case, dep.endpoint)
        if work is None:
            return None
        key, prepare = work
        dep.run_dir.mkdir(parents=True, exist_ok=True)
        # Per deployment: a new server process (or job) starts empty.
        marker = dep.run_dir / f"prepared-{key}-{dep.endpoint.pid or 0}-{dep.endpoint.job_id or 0}.json"
        with FileLock(str(dep.run_dir / "prepare.lock")):
            if marker.exists():
                logger.info("{}: using the collection prepared for an earlier case", case.id)
                done: dict[str, Any] = json.loads(marker.read_text(encoding="utf-8"))
                return done
            logger.info("{}: preparing ({})", case.id, case.recipe.workload.protocol)
            phases = prepare() | {"prepared_by": case.id}
            results.write_json(marker, phases)
        return phases

    @property
    def prometheus(self) -> Prometheus | None:
        """The session's Prometheus, once a monitored recipe has been deployed."""
        return self.monitoring.prometheus if self.monitoring else None

    def _deploy(self, loaded: LoadedRecipe) -> Deployment:
        spec = loaded.recipe.service
        if spec is None:
            raise ServiceError(f"{loaded.recipe.name}: the recipe has no service to deploy")
        run_dir = service_dir(self.root, loaded.recipe.name)
        url = self.target_url or spec.url
        if url is not None:
            parts = urlsplit(url)
            if not parts.hostname or (not parts.port and parts.scheme not in ("http", "https")):
                raise TargetUnreachable(f"{url}: not an http(s) URL with a host (or another scheme with a port)")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            if spec.health.kind == "tcp":
                problem = tcp_probe(parts.hostname, port)
            else:
                problem = probe(url.rstrip("/") + spec.health.path, timeout_s=min(10.0, spec.health.timeout_s))
            if problem:
                raise TargetUnreachable(f"{loaded.recipe.name}: cannot reach {url}: {problem}")
            endpoint = Endpoint(parts.hostname, port, url.rstrip("/"))
            run_dir.mkdir(parents=True, exist_ok=True)
            if not self.shared:  # what an earlier session prepared there may be gone: prepare again
                for stale in run_dir.glob("prepared-*.json"):
                    stale.unlink(missing_ok=True)
            endpoint.write(run_dir / "endpoint.json")
            return Deployment(loaded.recipe.name, endpoint, run_dir, None, None)
        if self.shared:
            return _deploy_shared(self.orchestrator, spec, loaded.recipe.name, run_dir)
        return deploy(self.orchestrator, spec, loaded.recipe.name, run_dir)

    def alive(self, dep: Deployment) -> bool:
        return dep.handle is None or self.orchestrator.status(dep) == ServiceState.RUNNING

    def close(self) -> None:
        if self.monitoring is not None:
            self.monitoring.close()
        while self._deployed:
            _, dep = self._deployed.popitem()
            if dep.handle is not None and not self.shared:
                try:
                    self.orchestrator.stop(dep)
                except Exception as exc:  # keep stopping the others
                    logger.error("failed to stop {}: {}", dep.name, exc)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SHARED_RECORD = "shared.json"


def _deploy_shared(orch: Orchestrator, spec: ServiceSpec, name: str, run_dir: Path) -> Deployment:
    """Deploy once for all processes sharing ``run_dir``: a file lock orders them, a record lets the
    later ones attach. The deployment is detached: the deploying worker may finish first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record = run_dir / SHARED_RECORD
    with FileLock(str(run_dir.with_suffix(".lock"))):
        if record.exists():
            dep = _attach_shared(orch, record)
            if orch.status(dep) == ServiceState.RUNNING:
                logger.info("{}: using the deployment shared at {}", name, dep.endpoint.url)
                return dep
            record.unlink()
        dep = deploy(orch, spec, name, run_dir, detach=True)
        try:
            results.write_json(record, to_record(orch, dep))
        except BaseException:
            orch.stop(dep)
            raise
        return dep


def _attach_shared(orch: Orchestrator, record: Path) -> Deployment:
    return from_record(orch, record.parent.name, json.loads(record.read_text(encoding="utf-8")))


def stop_shared(root: Path, orch: Orchestrator) -> list[str]:
    """Stop every shared deployment under ``root`` (the pytest-xdist controller, at session end)."""
    stopped = []
    for record in sorted((root / "services").glob(f"*/{SHARED_RECORD}")):
        try:
            dep = _attach_shared(orch, record)
            orch.stop(dep)
            stopped.append(dep.name)
        except Exception as exc:  # keep stopping the others
            logger.error("failed to stop the shared service in {}: {}", record.parent, exc)
        record.unlink(missing_ok=True)
    return stopped


@dataclass
class CaseResult:
    case_id: str
    run_dir: Path
    result: dict[str, Any]
    verdicts: list[slo.Verdict]
    service_failure: str | None = None

    @property
    def slo_passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    @property
    def passed(self) -> bool:
        return self.slo_passed and self.service_failure is None

    def failure_message(self) -> str:
        lines = [f"{self.case_id}: benchmark failed (results: {self.run_dir / 'results.json'})"]
        if self.service_failure:
            lines.append(self.service_failure)
        lines += ["  " + v.describe() for v in self.verdicts]
        return "\n".join(lines)

    def key_figures(self) -> str:
        m, t, r = self.result["metrics"], self.result["throughput"], self.result["requests"]

        def f(metric: str, stat: str) -> str:
            v = m[metric][stat]
            return "n/a" if v is None else f"{v:.1f}"

        if t.get("output_tokens"):
            rate = f"{t['output_tokens_per_s']:.1f} tok/s"
        elif t.get("items_per_s"):
            unit = ITEMS.get(self.result["recipe"]["resolved"]["workload"]["protocol"], "ops")
            rate = f"{t['items_per_s']:.1f} {unit}/s"
        else:
            rate = f"{t.get('response_bytes_per_s', 0.0) / 1e6:.2f} MB/s"
        res = self.result
        if res["recipe"]["resolved"]["workload"]["protocol"] == "fio":
            jobs = [
                f"{op} {o['per_s']:.0f} IOPS {o['bytes_per_s'] / 1e6:.1f} MB/s p99 {_ms(o['latency_ms']['p99'])} ms"
                for op, o in (res.get("ops") or {}).items()
            ]
            return "; ".join(jobs) or "no I/O completed"
        streamed = res["recipe"]["resolved"]["workload"]["stream"] or m["ttft_ms"]["count"]
        tokens = f"ttft p50 {f('ttft_ms', 'p50')} p95 {f('ttft_ms', 'p95')} ms, itl p50 {f('itl_ms', 'p50')} ms, "
        text = (
            f"{r['ok']}/{r['total']} ok, {tokens if streamed else ''}e2e p95 {f('e2e_ms', 'p95')} ms, "
            f"{t['requests_per_s']:.2f} req/s, {rate}"
        )
        if (rep := res.get("server_reported")) and rep.get("client_vs_server") is not None:
            text += (
                f", server decode {rep['decode_tokens_per_s']:.0f} tok/s (client/server {rep['client_vs_server']:.2f})"
            )
        if res.get("recall"):
            text += f", recall@k {res['recall']['mean']:.3f} (min {res['recall']['min']:.2f})"
        if "search" in res:
            text = f"{res['search']['note']}; at it: {text}"
        if r.get("dropped"):
            text += f", {r['dropped']} dropped"
        if "repeats" in res:
            cv = res["repeats"]["figures"].get("throughput.requests_per_s", {})
            text += f" [{res['repeats']['n']} runs, req/s CV {_pct(cv.get('cv'))} {cv.get('quality', '')}]"
        if res.get("steady_state") and res["steady_state"]["stable"] is False:
            text += " [never reached a steady state]"
        if (res.get("client") or {}).get("bottleneck"):
            text += " [load client likely the bottleneck: " + "; ".join(res["client"]["reasons"]) + "]"
        return text


@dataclass
class _Measured:
    """One load run and everything computed from it."""

    run: engine.Run
    summary: dict[str, Any]
    extras: dict[str, Any]  # dataset, steady_state, stages, client
    monitoring: dict[str, Any] | None
    service_failure: str | None


def _load_run(
    case: Case, services: Services, dep: Deployment, planned: Planned, run_dir: Path, progress: engine.Progress | None
) -> engine.Run:
    if case.recipe.workload.orchestration == "slurm":
        orch = services.orchestrator
        slurm_orch = orch if isinstance(orch, SlurmOrchestrator) else SlurmOrchestrator()
        return slurm_clients.run(case, dep.run_dir / "endpoint.json", run_dir / "clients", slurm_orch, progress)
    target = engine.Target(dep.endpoint.host, dep.endpoint.port, tls=dep.endpoint.url.startswith("https:"))
    workers = parallel.worker_count(case.load.workers)
    watch = services.monitoring
    if workers > 1:
        if watch is not None and watch.observer is not None:
            logger.info(
                "{}: {} client processes: the client's live Prometheus series are not exported", case.id, workers
            )
        return parallel.run(target, planned.plan, workers, progress)
    return engine.run(target, planned.plan, progress, watch.observer if watch else None)


def _measure(
    case: Case, services: Services, dep: Deployment, planned: Planned, run_dir: Path, progress: engine.Progress | None
) -> _Measured:
    run = _load_run(case, services, dep, planned, run_dir, progress)
    measured = run.measured
    service_failure = None
    if not services.alive(dep):
        service_failure = (
            f"service {dep.name} exited (code {dep.exit_code}) during the run\n"
            f"--- last lines of {dep.log_path} ---\n{services.orchestrator.logs(dep)}"
        )
    elif run.aborted and run.aborted.startswith("target unreachable"):
        service_failure = f"{dep.endpoint.url}: {run.aborted}; the run was stopped early"
    bounds = [b for s in case.recipe.slos() if (b := s.per_request_bound) is not None]
    summary = stats.summary(measured, run.window_start, run.window_end, bounds)
    if planned.phases is not None:
        summary["phases"] = planned.phases
    extras: dict[str, Any] = {"dataset": planned.dataset}
    plan = planned.plan
    extras["client"] = client_check.check(run.client, run.records, plan.mode, run.window_start, run.window_end)
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
    elif case.recipe.monitor is not None and case.recipe.monitor.enabled:
        note = watch.note if watch is not None else None
        monitoring = {"note": note or "server-side metrics were not collected"}
    return _Measured(run, summary, extras, monitoring, service_failure)


def _steady(measured: list[Record], run: engine.Run, bounds: list[tuple[str, float]]) -> dict[str, Any]:
    """The stable window (MSER-5) and the figures over it, beside the whole run's."""
    win = steady.window(measured, run.window_start, run.window_end)
    lo, hi = run.window_start + win["start_s"], run.window_start + win["end_s"]
    inside = [r for r in measured if lo <= r.intended < hi]
    part = stats.summary(inside, lo, hi, bounds)
    return win | {"requests": part["requests"], "metrics": part["metrics"], "throughput": part["throughput"]}


def _stages(
    measured: list[Record], start: float, planned: Planned, bounds: list[tuple[str, float]]
) -> list[dict[str, Any]]:
    """Figures per step of a ramp: a whole capacity curve from one run."""
    out = []
    for st in planned.stages:
        end = start + st.duration_s
        part = stats.summary([r for r in measured if start <= r.intended < end], start, end, bounds)
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


def _judge(case: Case, m: _Measured, slos: list[slo.SLO]) -> list[slo.Verdict]:
    verdicts = slo.judge(slos, m.summary, case.recipe.strict_samples)
    return verdicts + _client_verdict(m.extras["client"], case.recipe.strict_client)


SATURATED_E2E_S = 10.0
# What ``items_per_s`` counts, per protocol, in the one-line summary.
ITEMS = {"openai-embeddings": "inputs", "grpc": "messages", "kserve-v2": "inferences", "vector": "queries"}


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


def _search(
    case: Case,
    services: Services,
    dep: Deployment,
    run_dir: Path,
    progress: engine.Progress | None,
    phases: dict[str, Any] | None,
) -> tuple[_Measured | None, list[slo.Verdict], dict[str, Any]]:
    load = case.load
    slos = [slo.parse(e) for e in load.slo] if load.slo else case.recipe.slos()
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
        planned = planning.plan_for(pcase, dep.endpoint, duration)
        planned.phases = phases
        if load.over == "rate":
            limit = max(16, math.ceil(value * saturated_after_s))
            planned.plan = replace(planned.plan, saturated_in_flight=limit)
        m = _measure(pcase, services, dep, planned, run_dir, progress)
        if m.run.aborted == "interrupted":
            raise KeyboardInterrupt
        saturated = bool(m.run.aborted and m.run.aborted.startswith("saturated"))
        verdicts = _judge(pcase, m, slos)
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


def run_case(case: Case, services: Services, progress: engine.Progress | None = None) -> CaseResult:
    """Run one case against its (possibly already deployed) service and write its results."""
    dep = services.get(case.loaded) if case.recipe.service is not None else None  # fio: no service
    run_dir = services.root / case.id
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"{case.id}: cannot create {run_dir}: {exc.strerror or exc}") from None
    if dep is None:
        return _fio_case(case, services, run_dir, progress)
    logger.info("{}: {} load against {}", case.id, case.load.mode, dep.endpoint.url)
    extra: dict[str, Any] = {}
    phases = services.prepare(case, dep)
    if case.load.mode == "search":
        main, verdicts, extra["search"] = _search(case, services, dep, run_dir, progress, phases)
        runs = [main] if main is not None else []
    else:
        runs = []
        for i in range(case.recipe.workload.repeat):
            if i:
                logger.info("{}: repeat {}/{}", case.id, i + 1, case.recipe.workload.repeat)
            planned = planning.plan_for(case, dep.endpoint)
            planned.phases = phases
            m = _measure(case, services, dep, planned, run_dir, progress)
            runs.append(m)
            if m.run.aborted == "interrupted" or m.service_failure:
                break
        main = runs[-1]
        if len(runs) > 1:
            extra["repeats"] = _repeats(runs)
            bounds = [b for s in case.recipe.slos() if (b := s.per_request_bound) is not None]
            summary = stats.pooled([m.summary for m in runs], [r for m in runs for r in m.run.measured], bounds)
            main = _Measured(
                runs[0].run,
                summary | {k: v for k, v in main.summary.items() if k in ("server_metrics", "phases")},
                main.extras,
                main.monitoring,
                main.service_failure,
            )
        verdicts = _judge(case, main, case.recipe.slos())
    return _write_case(case, run_dir, dep.endpoint.url, dep.command, main, runs, verdicts, extra)


def _fio_case(case: Case, services: Services, run_dir: Path, progress: engine.Progress | None) -> CaseResult:
    """File storage: fio generates the load and measures it; its figures fill the ``ops`` part. Under
    ``orchestration: slurm`` every client task runs the jobs at once and their figures are merged."""
    w = case.recipe.workload
    spec = w.fio
    assert spec is not None and not isinstance(case.load.concurrency, list)
    try:
        directory = Path(expand(spec.directory, {"run_dir": str(run_dir)}))
    except ServiceError as exc:
        raise ServiceError(f"{case.recipe.name}: workload.fio.directory: {exc}") from None
    concurrency = case.load.concurrency or 1
    wall_t0 = time_now()
    if w.orchestration == "slurm":
        logger.info("{}: fio, {} job(s) in {} from every client task", case.id, len(spec.jobs), directory)
        orch = services.orchestrator if isinstance(services.orchestrator, SlurmOrchestrator) else SlurmOrchestrator()
        text = fio.job_text(spec, str(directory), w.duration_s, w.warmup_s, concurrency, tasks=True)
        job_file = fio.write_job(spec, directory, run_dir, text)
        try:
            reports = fio_tasks.run(case, job_file, run_dir / "clients", orch, progress)
        finally:
            if not spec.keep_files:
                fio.remove_data_files(spec.jobs, directory)
        per_task = [fio.ops(r) for r in reports]
        ops = fio.merge([o for o, _ in per_task])
        errors = {f"{name} (task {i})": err for i, (_, errs) in enumerate(per_task) for name, err in errs.items()}
        command = ["srun", "fio", "--output-format=json", str(job_file)]
        report, aborted = reports[0], None
    else:
        logger.info("{}: fio, {} job(s) in {}", case.id, len(spec.jobs), directory)
        done = fio.run(spec, directory, run_dir, w.duration_s, w.warmup_s, concurrency)
        ops, errors = fio.ops(done.report)
        job_file, report = done.job_file, done.report
        aborted = "interrupted" if done.interrupted else None
        command = [fio.binary(), "--output-format=json", str(job_file)]
    wall_t1 = time_now()
    summary = stats.summary([], 0.0, 0.0)
    total = sum(o["total"] for o in ops.values())
    busy = sum(o["seconds"] for o in ops.values())
    summary["requests"] |= {"total": total, "ok": total}
    moved = sum(o["bytes"] for o in ops.values())
    summary["throughput"] |= {"elapsed_s": busy, "requests_per_s": total / busy if busy else 0.0,
                              "items_per_s": total / busy if busy else 0.0,
                              "response_bytes_per_s": moved / busy if busy else 0.0}  # fmt: skip
    summary["ops"] = ops
    info = {"kind": "files", "prompts": 0, "directory": str(directory), "job_file": job_file.name,
            "fio_version": report.get("fio version"), "jobs": fio.jobs_info(report),
            "tasks": w.clients.nodes * w.clients.tasks_per_node if w.orchestration == "slurm" else 1}  # fmt: skip
    extras: dict[str, Any] = {"dataset": info}
    run = engine.Run([], 0.0, wall_t0, 0.0, busy, wall_t1=wall_t1, aborted=aborted)
    m = _Measured(run, summary, extras, None, None)
    verdicts = slo.judge(case.recipe.slos(), summary, case.recipe.strict_samples)
    verdicts += [slo.Verdict(f"fio job {name} ran", None, "no error", False, err) for name, err in errors.items()]
    return _write_case(case, run_dir, f"file://{directory}", command, m, [m], verdicts, {})


def _repeats(runs: list[_Measured]) -> dict[str, Any]:
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
    endpoint: str,
    command: list[str] | None,
    main: _Measured | None,
    runs: list[_Measured],
    verdicts: list[slo.Verdict],
    extra: dict[str, Any],
) -> CaseResult:
    if main is None:  # a search where no probe passed: the lowest probe's figures are in extra["search"]
        empty = engine.Run([], 0.0, 0.0, 0.0, 0.0)
        main = _Measured(empty, stats.summary([], 0.0, 0.0), {}, None, None)
    run = main.run
    records = [r for m in runs for r in m.run.records] or run.records
    first = runs[0].run if runs else run
    service_failure = main.service_failure
    shape: dict[str, Any] = {}
    if isinstance(case.load.rate, Ramp):
        shape["ramp"] = case.load.rate.model_dump(by_alias=True)
    if "search" in extra:
        shape[case.load.over] = extra["search"]["max_passing"]
    result = {
        "schema": results.SCHEMA_VERSION,
        "case_id": case.id,
        "recipe": {
            "name": case.recipe.name,
            "path": str(case.loaded.path),
            "sha256": case.loaded.sha256,
            "resolved": case.recipe.model_dump(mode="json"),
        },
        "provenance": results.provenance(__version__, _iso(first.wall_t0), _iso(run.wall_t1), command),
        "endpoint": endpoint,
        "load": {
            "mode": case.load.mode,
            **case.point,
            **shape,
            "warmup_requests": len(records) - sum(1 for r in records if not r.warmup),
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
        "records_file": "records.jsonl",
    }
    _scrub_nan(result)
    try:
        results.write_json(run_dir / "results.json", result)
        write_jsonl(run_dir / "records.jsonl", records, first.t0)
    except OSError as exc:
        raise ResultsError(f"{case.id}: cannot write results to {run_dir}: {exc.strerror or exc}") from None
    if run.aborted == "interrupted":
        raise KeyboardInterrupt
    return CaseResult(case.id, run_dir, result, verdicts, service_failure)


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def _scrub_nan(obj: Any) -> None:
    """JSON has no NaN: a figure that does not exist is null."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        if isinstance(v, float) and not math.isfinite(v):
            obj[k] = None
        else:
            _scrub_nan(v)
