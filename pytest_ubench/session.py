"""The one place that runs a case: deploy, wait healthy, drive load, judge, write results.

``plugin.py`` and ``cli.py`` both call this module; neither repeats any of it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from filelock import FileLock
from loguru import logger

from ._version import __version__
from .load import engine
from .load.dataset import synthetic_prompts
from .load.http import build_request
from .load.openai import PATHS, request_body
from .metrics import results, slo, stats
from .metrics.records import write_jsonl
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
from .orchestrators.health import probe, wait_healthy
from .orchestrators.slurm import SlurmOrchestrator
from .recipes.loader import LoadedRecipe
from .recipes.schema import ServiceSpec
from .recipes.sweep import Case
from .slurm import clients as slurm_clients


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

    @property
    def prometheus(self) -> Prometheus | None:
        """The session's Prometheus, once a monitored recipe has been deployed."""
        return self.monitoring.prometheus if self.monitoring else None

    def _deploy(self, loaded: LoadedRecipe) -> Deployment:
        spec = loaded.recipe.service
        run_dir = service_dir(self.root, loaded.recipe.name)
        url = self.target_url or spec.url
        if url is not None:
            parts = urlsplit(url)
            if not parts.hostname or (not parts.port and parts.scheme not in ("http", "https")):
                raise TargetUnreachable(f"{url}: not an http(s) URL with a host")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            problem = probe(url.rstrip("/") + spec.health.path, timeout_s=min(10.0, spec.health.timeout_s))
            if problem:
                raise TargetUnreachable(f"{loaded.recipe.name}: cannot reach {url}: {problem}")
            endpoint = Endpoint(parts.hostname, port, url.rstrip("/"))
            run_dir.mkdir(parents=True, exist_ok=True)
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

        return (
            f"{r['ok']}/{r['total']} ok, ttft p50 {f('ttft_ms', 'p50')} p95 {f('ttft_ms', 'p95')} ms, "
            f"itl p50 {f('itl_ms', 'p50')} ms, e2e p95 {f('e2e_ms', 'p95')} ms, "
            f"{t['requests_per_s']:.2f} req/s, {t['output_tokens_per_s']:.1f} tok/s"
        )


def plan_for(case: Case, endpoint: Endpoint) -> engine.LoadPlan:
    w = case.recipe.workload
    prompts = synthetic_prompts(w.dataset.prompts, w.dataset.prompt_tokens, w.dataset.seed, case.id)
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if w.stream else "application/json"}
    if w.api_key_env:
        key = os.environ.get(w.api_key_env)
        if not key:
            raise ServiceError(f"{case.recipe.name}: workload.api_key_env names {w.api_key_env}, which is not set")
        headers["Authorization"] = f"Bearer {key}"
    base = urlsplit(endpoint.url).path.rstrip("/")
    path = base + PATHS[w.protocol]
    reqs = [
        build_request(
            "POST",
            endpoint.host,
            endpoint.port,
            path,
            request_body(w.protocol, w.model, p, w.dataset.output_tokens, w.stream, w.params),
            headers,
        )
        for p in prompts
    ]
    load = case.load
    assert not isinstance(load.concurrency, list) and not isinstance(load.rate, list)  # resolved by the sweep
    return engine.LoadPlan(
        requests=reqs,
        stream=w.stream,
        mode=load.mode,
        concurrency=load.concurrency or 1,
        rate=load.rate or 1.0,
        arrival=load.arrival,
        seed=load.seed,
        duration_s=w.duration_s,
        warmup_s=w.warmup_s,
        max_requests=w.max_requests,
        connect_timeout_s=w.timeouts.connect_s,
        request_timeout_s=w.timeouts.request_s,
    )


def run_case(case: Case, services: Services, progress: engine.Progress | None = None) -> CaseResult:
    """Run one case against its (possibly already deployed) service and write its results."""
    dep = services.get(case.loaded)
    run_dir = services.root / case.id
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"{case.id}: cannot create {run_dir}: {exc.strerror or exc}") from None
    plan = plan_for(case, dep.endpoint)
    logger.info("{}: {} load against {}", case.id, case.load.mode, dep.endpoint.url)
    target = engine.Target(dep.endpoint.host, dep.endpoint.port, tls=dep.endpoint.url.startswith("https:"))
    watch = services.monitoring
    if case.recipe.workload.orchestration == "slurm":
        orch = services.orchestrator
        slurm_orch = orch if isinstance(orch, SlurmOrchestrator) else SlurmOrchestrator()
        run = slurm_clients.run(case, dep.run_dir / "endpoint.json", run_dir / "clients", slurm_orch, progress)
    else:
        run = engine.run(target, plan, progress, watch.observer if watch else None)
    measured = run.measured

    service_failure = None
    if not services.alive(dep):
        service_failure = (
            f"service {dep.name} exited (code {dep.exit_code}) during the run\n"
            f"--- last lines of {dep.log_path} ---\n{services.orchestrator.logs(dep)}"
        )
    elif run.aborted and run.aborted.startswith("target unreachable"):
        service_failure = f"{dep.endpoint.url}: {run.aborted}; the run was stopped early"
    slos = case.recipe.slos()
    bounds = [b for s in slos if (b := s.per_request_bound) is not None]
    summary = stats.summary(measured, run.window_start, run.window_end, bounds)
    monitoring = None
    if watch is not None and run.aborted != "interrupted":
        # The same window the throughput figures use: from the end of warm-up to the last completion.
        start = run.window_start + run.wall_t0 - run.t0  # perf_counter -> epoch seconds
        monitoring = watch.collect(case.recipe, run, start, start + summary["throughput"]["elapsed_s"])
    if monitoring is not None:
        summary["server_metrics"] = monitoring.pop("queries")
    elif case.recipe.monitor is not None and case.recipe.monitor.enabled:
        note = watch.note if watch is not None else None
        monitoring = {"note": note or "server-side metrics were not collected"}
    verdicts = slo.judge(slos, summary, case.recipe.strict_samples)
    result = {
        "schema": results.SCHEMA_VERSION,
        "case_id": case.id,
        "recipe": {
            "name": case.recipe.name,
            "path": str(case.loaded.path),
            "sha256": case.loaded.sha256,
            "resolved": case.recipe.model_dump(mode="json"),
        },
        "provenance": results.provenance(__version__, _iso(run.wall_t0), _iso(run.wall_t1), dep.command),
        "endpoint": dep.endpoint.url,
        "load": {"mode": case.load.mode, **case.point, "warmup_requests": len(run.records) - len(measured)},
        **summary,
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
        "monitoring": monitoring,
        "records_file": "records.jsonl",
    }
    _scrub_nan(result)
    try:
        results.write_json(run_dir / "results.json", result)
        write_jsonl(run_dir / "records.jsonl", run.records, run.t0)
    except OSError as exc:
        raise ResultsError(f"{case.id}: cannot write results to {run_dir}: {exc.strerror or exc}") from None
    if run.aborted == "interrupted":
        raise KeyboardInterrupt
    return CaseResult(case.id, run_dir, result, verdicts, service_failure)


def _scrub_nan(obj: Any) -> None:
    """JSON has no NaN: a figure that does not exist is null."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        if isinstance(v, float) and not math.isfinite(v):
            obj[k] = None
        else:
            _scrub_nan(v)
