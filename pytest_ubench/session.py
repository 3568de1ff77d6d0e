"""The one place that runs a case: deploy, wait healthy, drive load, judge, write results.

``plugin.py`` and ``cli.py`` both call this module; neither repeats any of it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from loguru import logger

from ._version import __version__
from .load import engine
from .load.dataset import synthetic_prompts
from .load.http import build_request
from .load.openai import PATHS, request_body
from .metrics import results, slo, stats
from .metrics.records import write_jsonl
from .monitor import client_metrics, grafana, queries
from .monitor import prometheus as prom_monitor
from .monitor.client_metrics import ClientExporter
from .orchestrators.backends import get_orchestrator
from .orchestrators.base import Deployment, Endpoint, Orchestrator, ServiceError, ServiceState
from .orchestrators.health import probe, wait_healthy
from .recipes.loader import LoadedRecipe
from .recipes.schema import ServiceSpec
from .recipes.sweep import Case


class TargetUnreachable(ServiceError):
    """The service to benchmark could not be reached at all (CLI exit code 3)."""


class ResultsError(Exception):
    """Results could not be written (a full or read-only disk); CLI exit code 4."""


def default_output_root() -> Path:
    return Path("ubench-results") / datetime.now().strftime("%Y%m%d-%H%M%S")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


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
    ) -> None:
        self.root = root
        self.orchestrator = get_orchestrator(orchestrator) if isinstance(orchestrator, str) else orchestrator
        self.target_url = target_url
        self.monitoring = monitoring
        self._deployed: dict[str, Deployment] = {}
        self._failed: dict[str, ServiceError] = {}
        self._prometheus: prom_monitor.Prometheus | None = None
        # recipes whose targets Prometheus scrapes -> (query sets, own queries), for the dashboard
        self._monitored: dict[str, tuple[list[str], dict[str, str]]] = {}
        self.monitoring_note: str | None = None  # why server-side metrics are off, said once
        self._exporter: ClientExporter | None = None  # the load client's live metrics, once monitored

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
                self._watch(loaded, dep)
            except ServiceError as exc:
                self._failed[key] = exc
                raise
        return self._deployed[key]

    def _watch(self, loaded: LoadedRecipe, dep: Deployment) -> None:
        """Have Prometheus scrape the recipe's targets, and wait for their first scrape."""
        mon = loaded.recipe.monitor
        if mon is None or not mon.enabled or not self.monitoring:
            return
        prom = self._ensure_prometheus(mon.interval_s, mon.retention)
        if prom is None:
            return
        spec = loaded.recipe.service
        name = loaded.recipe.name
        targets: list[tuple[str, str, int, str, str]] = []
        if spec.metrics_path:
            scheme = "https" if dep.endpoint.url.startswith("https:") else "http"
            targets.append((name, dep.endpoint.host, dep.endpoint.port, spec.metrics_path, scheme))
        for extra in mon.targets:
            extra_host, _, extra_port = extra.rpartition(":")
            targets.append((f"{name}-{extra}", extra_host, int(extra_port), "/metrics", "http"))
        added = [(job, prom.add_target(job, host, port, path, scheme)) for job, host, port, path, scheme in targets]
        if self._exporter is None:
            # Our own exporter, always up: waiting for its first scrape absorbs Prometheus' start-up
            # (~6 s to the first scrape, measured), so the recipe's timeout is left for its own targets.
            self._exporter = ClientExporter()
            instance = prom.add_target(client_metrics.JOB, self._exporter.host, self._exporter.port)
            prom.wait_scraped(client_metrics.JOB, instance, 60.0)
        for job, instance in added:
            prom.wait_scraped(job, instance, mon.target_timeout_s)
        self._monitored[name] = (list(mon.query_sets), dict(mon.queries))
        sections = {"load client": queries.CLIENT} | grafana.sections_for(self._monitored)
        dash = grafana.dashboard(f"ubench {self.root.name}", f"ubench-{self.root.name}"[:40], sections)
        grafana.write_provisioning(self.root, prom.url, dash)

    @property
    def prometheus(self) -> prom_monitor.Prometheus | None:
        """The session's Prometheus, once a monitored recipe has been deployed."""
        return self._prometheus

    def _ensure_prometheus(self, interval_s: float, retention: str) -> prom_monitor.Prometheus | None:
        if self._prometheus is None and self.monitoring_note is None:
            binary = prom_monitor.find_binary()
            if binary is None:
                self.monitoring_note = "no 'prometheus' binary on PATH: server-side metrics are off"
                logger.warning(self.monitoring_note)
                return None
            self._prometheus = prom_monitor.deploy(self.orchestrator, self.root, interval_s, retention, binary)
        return self._prometheus

    def server_metrics(self, case: Case, run: engine.Run) -> dict[str, Any] | None:
        """The recipe's queries over the case's load window, and the client/server cross-check."""
        mon = case.recipe.monitor
        prom = self._prometheus
        if mon is None or prom is None or case.recipe.name not in self._monitored:
            return None
        wall = run.wall_t0 - run.t0  # perf_counter -> epoch seconds
        last = max((r.end for r in run.measured if r.end == r.end), default=run.window_end)
        start, end = run.window_start + wall, max(run.window_end, last) + wall
        if not prom.alive():
            note = f"Prometheus exited during the run (code {prom.deployment.exit_code}): no server-side data"
            return {"prometheus": prom.url, "window": [start, end], "complete": False, "note": note, "queries": {}}
        time.sleep(prom.interval_s * 1.5 + 0.2)  # let one more scrape land after the last request
        named = queries.resolve(mon.query_sets, mon.queries, mon.interval_s)
        values = prom_monitor.window_metrics(prom, named, start, end)
        complete = all("error" not in v for v in values.values())
        checks = {}
        for set_name in mon.query_sets:
            check = queries.CROSS_CHECKS.get(set_name)
            if check is None:
                continue
            try:
                before = prom.instant(check.counter, run.wall_t0)
                after = prom.instant(check.counter, time.time())
            except Exception as exc:
                complete = False
                logger.warning("cross-check {} failed: {}", set_name, exc)
                continue
            ok = [r for r in run.records if r.ok]
            client = sum(r.output_tokens or 0 for r in ok) if check.client_field == "output_tokens" else len(ok)
            server = None if before is None or after is None else after - before
            checks[set_name] = {
                "counter": check.counter,
                "client_field": check.client_field,
                "client": client,
                "server": server,
                "relative_difference": None if not server else abs(client - server) / server,
            }
        return {"prometheus": prom.url, "window": [start, end], "complete": complete, "queries": values,
                "cross_check": checks}  # fmt: skip

    def _deploy(self, loaded: LoadedRecipe) -> Deployment:
        spec = loaded.recipe.service
        run_dir = self.root / "services" / loaded.recipe.name
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
        return deploy(self.orchestrator, spec, loaded.recipe.name, run_dir)

    def alive(self, dep: Deployment) -> bool:
        return dep.handle is None or self.orchestrator.status(dep) == ServiceState.RUNNING

    @property
    def observer(self) -> engine.Observer | None:
        """What the load engine reports its live figures to (the client metrics exporter)."""
        return self._exporter.collector if self._exporter is not None else None

    def close(self) -> None:
        if self._exporter is not None:
            exporter, self._exporter = self._exporter, None
            exporter.close()
        if self._prometheus is not None:
            prom, self._prometheus = self._prometheus, None
            self.orchestrator.stop(prom.deployment)
        while self._deployed:
            _, dep = self._deployed.popitem()
            if dep.handle is not None:
                try:
                    self.orchestrator.stop(dep)
                except Exception as exc:  # keep stopping the others
                    logger.error("failed to stop {}: {}", dep.name, exc)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    run = engine.run(target, plan, progress, services.observer)

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
    summary = stats.summary(run.measured, run.window_start, run.window_end, bounds)
    monitoring = None if run.aborted == "interrupted" else services.server_metrics(case, run)
    if monitoring is not None:
        summary["server_metrics"] = monitoring.pop("queries")
    elif case.recipe.monitor is not None and case.recipe.monitor.enabled:
        monitoring = {"note": services.monitoring_note or "server-side metrics were not collected"}
    verdicts = slo.judge(slos, summary)
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
        "load": {"mode": case.load.mode, **case.point, "warmup_requests": len(run.records) - len(run.measured)},
        **summary,
        "slo": [
            {"expression": v.expression, "measured": v.measured, "allowed": v.allowed, "passed": v.passed}
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
