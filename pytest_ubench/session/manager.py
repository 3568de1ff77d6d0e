"""Long-lived services for ``ubenchai server start|list|status|stop``.

A benchmark session deploys and tears down its own services (``session.Services``); these commands
instead leave a service running between commands, e.g. to point several ``client run --target``
at it. Each one is recorded in the registry so a later command can find, check and stop it.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from ..metrics import server_queries as queries
from ..metrics.results import ResultsDir
from ..monitor import grafana_server
from ..monitor import prometheus as prom_monitor
from ..monitor.watch import Watching
from ..orchestrators import registry
from ..orchestrators.backends import get_orchestrator
from ..orchestrators.base import (
    Deployment,
    Endpoint,
    Orchestrator,
    ServiceError,
    ServiceState,
    from_record,
    to_record,
)
from ..orchestrators.health import deploy_healthy, probe
from ..orchestrators.local import LocalProcess
from ..orchestrators.replicas import Member, Replicated, replicated
from ..recipes.deployment import ServiceSpec
from ..recipes.loader import LoadedRecipe
from ..recipes.schema import MonitorRecipe


@dataclass(frozen=True)
class Status:
    entry: registry.Entry
    state: ServiceState
    health: str | None  # None when the health check answered, else the problem


def start(loaded: LoadedRecipe, root: Path, orch: Orchestrator | None = None) -> registry.Entry:
    spec = loaded.recipe.service
    if spec is None or spec.command is None:
        raise ValueError(f"{loaded.recipe.name}: the recipe starts no service (a url, or fio): nothing to start")
    if isinstance(spec.replicas, list):
        raise ValueError(f"{loaded.recipe.name}: service.replicas is a sweep ({spec.replicas}); a running service has "
                         "one count: --set service.replicas=N, and 'server scale ID N' later")  # fmt: skip
    orch = replicated(orch or get_orchestrator("local"))
    service_id = registry.new_id(loaded.recipe.name)
    dep = deploy_healthy(orch, spec, loaded.recipe.name, ResultsDir(root).service_dir(service_id), detach=True)
    return _register(service_id, loaded.recipe.name, orch, dep, health_path=spec.health.path,
                     metrics_path=spec.metrics_path, extra={"spec": _spec_record(spec)})  # fmt: skip


def _spec_record(spec: ServiceSpec) -> dict[str, Any]:
    """The service as started, kept to start more replicas of it (``scale``) or it again (``restart``)."""
    return spec.model_dump(mode="json", exclude_defaults=True)


def _started_spec(entry: registry.Entry) -> ServiceSpec:
    if "spec" not in entry.extra:
        raise ServiceError(f"{entry.id}: started by an earlier version of ubenchai, which kept no record of its "
                           "service to start again; stop it and start it anew")  # fmt: skip
    return ServiceSpec.model_validate(entry.extra["spec"])


def scale(entry: registry.Entry, count: int, orch: Replicated | None = None) -> registry.Entry:
    """A running service with ``count`` replicas (more started, each healthy; or the last ones stopped).
    ``orch``: where the new ones go (a cluster profile's placement), else the entry's orchestrator."""
    orch = orch or get_orchestrator(entry.orchestrator)
    dep = orch.attach(entry.deployment(), entry.handle)
    scaled = orch.scale(dep, count, _started_spec(entry).model_copy(update={"replicas": 1}), detach=True)
    return _save(entry, orch, scaled)


def restart(entry: registry.Entry, orch: Replicated | None = None) -> registry.Entry:
    """The service stopped and started again with as many replicas, under the same id and directory."""
    orch = orch or get_orchestrator(entry.orchestrator)
    dep = orch.attach(entry.deployment(), entry.handle)
    spec = _started_spec(entry).model_copy(update={"replicas": len(entry.endpoint.urls)})  # before it stops
    orch.stop(dep)
    fresh = deploy_healthy(orch, spec, entry.recipe, Path(entry.run_dir), detach=True)
    return _save(entry, orch, fresh)


def _save(entry: registry.Entry, orch: Orchestrator, dep: Deployment) -> registry.Entry:
    """The entry of a service whose deployment changed (scaled, restarted)."""
    log = str(dep.log_path) if dep.log_path else None
    updated = replace(entry, endpoint=dep.endpoint, log_path=log, command=dep.command, handle=orch.describe(dep))
    registry.save(updated)
    return updated


def members(entry: registry.Entry) -> list[Member]:
    """Each replica of a running service, with its state."""
    orch = get_orchestrator(entry.orchestrator)
    return orch.members(orch.attach(entry.deployment(), entry.handle))


def _register(entry_id: str, recipe: str, orch: Orchestrator, dep: Deployment, **fields: Any) -> registry.Entry:
    """Record a detached deployment; one that cannot be recorded is stopped (nobody could find it again)."""
    try:
        entry = registry.Entry(
            id=entry_id,
            recipe=recipe,
            orchestrator=orch.name,
            endpoint=dep.endpoint,
            run_dir=str(dep.run_dir),
            log_path=str(dep.log_path) if dep.log_path else None,
            command=dep.command,
            handle=orch.describe(dep),
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            **fields,
        )
        registry.save(entry)
    except BaseException:
        orch.stop(dep)
        raise
    return entry


def status(entry: registry.Entry) -> Status:
    orch = get_orchestrator(entry.orchestrator)
    dep = orch.attach(entry.deployment(), entry.handle)
    state = orch.status(dep)
    health = (
        probe(entry.endpoint.url + entry.health_path, 5.0, require_ok=True)
        if state == ServiceState.RUNNING
        else state.value
    )
    return Status(entry, state, health)


def stop(service_id: str) -> registry.Entry:
    entry = registry.get(service_id)
    orch = get_orchestrator(entry.orchestrator)
    board = grafana_deployment(entry)
    if board is not None:  # a monitor's Grafana goes with it
        orch.stop(board)
    orch.stop(orch.attach(entry.deployment(), entry.handle))
    registry.remove(service_id)
    return entry


def grafana_deployment(entry: registry.Entry) -> Deployment | None:
    g = entry.extra.get("grafana")
    return from_record(get_orchestrator(entry.orchestrator), "grafana", g) if g else None


def logs(entry: registry.Entry, lines: int = 40, replica: int | None = None) -> str:
    """The service's log (``replica``: that replica's; several without: each one's last lines)."""
    orch = get_orchestrator(entry.orchestrator)
    return orch.logs(orch.attach(entry.deployment(), entry.handle), lines, replica)


def monitor_start(
    mon: MonitorRecipe, service_ids: list[str], root: Path, orch: Orchestrator | None = None
) -> registry.Entry:
    """Prometheus left running, scraping services started with ``server start`` and the recipe's targets."""
    orch = orch or get_orchestrator("local")
    how = prom_monitor.runnable(orch, "prometheus", ("prometheus",), mon)
    if how is None:
        raise prom_monitor.MonitoringError("no 'prometheus' binary on PATH (Debian: apt-get install prometheus)")
    services = [registry.get(i) for i in service_ids]  # KeyError names an unknown id
    monitor_id = registry.new_id(mon.name)
    prom = prom_monitor.Prometheus.start(
        orch, root / "monitors" / monitor_id, mon.interval_s, mon.retention, how[0], detach=True, image=how[1]
    )
    try:
        added = []
        for svc in services:
            path = svc.metrics_path or "/metrics"
            for at, at_port in svc.endpoint.addresses:  # each replica, under the service's id
                added.append((svc.id, prom.add_target(svc.id, at, at_port, path, svc.endpoint.scheme)))
        for extra in mon.targets:
            host, _, port = extra.rpartition(":")
            added.append((extra, prom.add_target(extra, host, int(port))))
        for job, instance in added:
            prom.wait_scraped(job, instance, mon.target_timeout_s)
        details: dict[str, Any] = {"interval_s": mon.interval_s, "query_sets": list(mon.query_sets),
                                   "queries": dict(mon.queries), "targets": [job for job, _ in added],
                                   "started_epoch": time.time()}  # fmt: skip
        if mon.grafana is not None:
            where = root / "monitors" / monitor_id
            scope = queries.jobs([job for job, _ in added])
            board = grafana_server.Grafana.start(orch, where, mon.grafana, prom.url, list(mon.query_sets),
                                                 dict(mon.queries), scope, monitor_id)  # fmt: skip
            access = {"password_file": str(board.password_file), "user": board.user}
            details["grafana"] = to_record(orch, board.deployment) | access
    except BaseException:
        orch.stop(prom.deployment)
        raise
    return _register(monitor_id, mon.name, orch, prom.deployment, health_path="/-/ready", kind="monitor",
                     extra=details)  # fmt: skip


def _prometheus(entry: registry.Entry) -> prom_monitor.Prometheus:
    """A running monitor's Prometheus, attached."""
    orch = get_orchestrator(entry.orchestrator)
    dep = orch.attach(entry.deployment(), entry.handle)
    return prom_monitor.Prometheus(dep, Path(entry.run_dir), float(entry.extra["interval_s"]), orch)


def monitor_watching(service_id: str) -> Watching | None:
    """The running monitor that already scrapes this service (the newest, when several do), so a
    ``client run --target ID`` reads the server's series there instead of starting a Prometheus of its own."""
    monitors = [e for e in registry.all_entries("monitor") if service_id in e.extra.get("targets", [])]
    for entry in sorted(monitors, key=lambda e: e.started, reverse=True):
        if entry.elsewhere is None:
            prom = _prometheus(entry)
            if prom.alive():
                return Watching(prom, service_id, entry.id)
    return None


def monitor_metrics(entry: registry.Entry, since_s: float | None = None) -> dict[str, Any]:
    """The monitor's named queries from its start (or the last ``since_s`` seconds) until now."""
    x = entry.extra
    prom = _prometheus(entry)
    end = time.time()
    start = max(float(x["started_epoch"]), end - since_s) if since_s else float(x["started_epoch"])
    named = queries.resolve(x["query_sets"], x["queries"], float(x["interval_s"]), queries.jobs(x["targets"]))
    return {"monitor": entry.id, "prometheus": entry.endpoint.url, "window": [start, end],
            "targets": x["targets"], "queries": prom_monitor.window_metrics(prom, named, start, end)}  # fmt: skip


def client_register(recipe: str, root: Path, cases: int) -> registry.Entry:
    """Record this process as a running ``client run`` so other commands can list, check and stop it."""
    me = psutil.Process()
    entry = registry.Entry(
        id=registry.new_id(recipe),
        recipe=recipe,
        orchestrator="local",
        endpoint=Endpoint("", 0, ""),
        run_dir=str(root.absolute()),
        log_path=None,
        command=None,
        handle={"pid": me.pid, "create_time": me.create_time()},
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        kind="client",
        extra={"cases": cases},
    )
    registry.save(entry)
    return entry


def client_progress(entry: registry.Entry) -> tuple[bool, int]:
    """Whether the run is still going, and how many of its cases have written results (a long case's
    checkpoint, marked partial, is not done)."""
    proc = LocalProcess.attach(int(entry.handle["pid"]), float(entry.handle["create_time"]))
    done = sum(1 for c in ResultsDir(Path(entry.run_dir)).cases() if not c.result.get("partial"))
    return proc.exit_code() is None, done


def client_stop(entry: registry.Entry, timeout_s: float = 120.0) -> bool:
    """Ctrl-C for a run in another terminal: it stops its load, writes partial results and its services."""
    proc = LocalProcess.attach(int(entry.handle["pid"]), float(entry.handle["create_time"]))
    if proc.exit_code() is None:
        os.kill(proc.pid, signal.SIGINT)
        if not proc.wait(timeout_s):
            return False
    registry.remove(entry.id)
    return True
