"""Monitoring for a benchmark session: one Prometheus, the load client's exporter, the dashboard.

``session.Services`` deploys the services; this watches them. Kept apart so the session stays
about deploying and running cases, and monitoring can be switched off as one piece.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from ..load.engine import Observer, Run
from ..metrics import server_queries as queries
from ..orchestrators.base import Deployment, Orchestrator
from ..orchestrators.health import deploy_healthy
from ..recipes.deployment import HealthCheck, Resources, ServiceSpec
from ..recipes.schema import Recipe
from . import client_metrics, grafana
from . import prometheus as prom_monitor
from .client_metrics import ClientExporter
from .cross_check import cross_checks


@dataclass(frozen=True)
class Watching:
    """A Prometheus that already scrapes the service under test (``ubenchai monitor start --targets ID``):
    a run against that service uses it rather than starting a second one beside it."""

    prometheus: prom_monitor.Prometheus
    job: str  # the service's scrape job there (its id)
    monitor: str  # the monitor's id


class Monitoring:
    def __init__(self, orchestrator: Orchestrator, root: Path, watching: Watching | None = None) -> None:
        """``watching``: the target's own monitor; it is borrowed (the targets we add to it are removed
        again on close) and never stopped."""
        self.orchestrator = orchestrator
        self.root = root
        self.watching = watching
        self.prometheus: prom_monitor.Prometheus | None = watching.prometheus if watching else None
        self.note: str | None = None  # why server-side metrics are off, said once
        self._exporter: ClientExporter | None = None  # the load client's live metrics
        # recipes whose targets Prometheus scrapes -> their service's scrape job
        self._jobs: dict[str, str] = {}
        self._sections: dict[str, dict[str, str]] = {}  # the dashboard's rows: recipe -> named queries
        self._added: list[tuple[str, str, int]] = []  # targets added to a borrowed Prometheus
        self._node_exporters: dict[str, Deployment] = {}  # one per node a service runs on
        self._missing: set[str] = set()

    @property
    def observer(self) -> Observer | None:
        """What the load engine reports its live figures to (the client metrics exporter)."""
        return self._exporter.collector if self._exporter is not None else None

    def watch(self, recipe: Recipe, dep: Deployment) -> None:
        """Have Prometheus scrape the recipe's targets, and wait for their first scrape."""
        mon = recipe.monitor
        if mon is None or not mon.enabled:
            return
        prom = self._ensure_prometheus(mon.interval_s, mon.retention)
        if prom is None:
            return
        targets: list[tuple[str, str, int, str, str]] = []
        job = recipe.name
        if self.watching is not None:
            job = self.watching.job  # scraped there already, under its id
        elif recipe.service is not None and recipe.service.metrics_path:
            endpoint = dep.endpoint
            targets.append((recipe.name, endpoint.host, endpoint.port, recipe.service.metrics_path, endpoint.scheme))
        if "node_exporter" in mon.parts():
            exporter = self._node_exporter(dep)
            if exporter is not None:
                targets.append((f"node-{exporter.name}", exporter.endpoint.host, exporter.endpoint.port, "/metrics",
                                "http"))  # fmt: skip
        for extra in mon.targets:
            extra_host, _, extra_port = extra.rpartition(":")
            targets.append((f"{recipe.name}-{extra}", extra_host, int(extra_port), "/metrics", "http"))
        added = [(name, self._add(prom, name, host, port, path, scheme)) for name, host, port, path, scheme in targets]
        if self._exporter is None:
            # Our own exporter, always up: waiting for its first scrape absorbs Prometheus' start-up
            # (~6 s to the first scrape, measured), so the recipe's timeout is left for its own targets.
            self._exporter = ClientExporter()
            instance = self._add(prom, client_metrics.JOB, self._exporter.host, self._exporter.port)
            prom.wait_scraped(client_metrics.JOB, instance, 60.0)
        for name, instance in added:
            prom.wait_scraped(name, instance, mon.target_timeout_s)
        self._jobs[recipe.name] = queries.jobs([job])
        if self.watching is not None:
            return  # the monitor has its own dashboard
        self._sections[recipe.name] = queries.named(mon.query_sets, mon.queries, self._jobs[recipe.name])
        sections = {"load client": queries.CLIENT} | self._sections
        dash = grafana.dashboard(f"ubench {self.root.name}", f"ubench-{self.root.name}"[:40], sections)
        grafana.write_provisioning(self.root, prom.url, dash)

    def _add(self, prom: prom_monitor.Prometheus, name: str, host: str, port: int, path: str = "/metrics",
             scheme: str = "http") -> str:  # fmt: skip
        if self.watching is not None:
            self._added.append((name, host, port))
        return prom.add_target(name, host, port, path, scheme)

    def unwatch(self, recipe: Recipe, dep: Deployment) -> None:
        """Stop scraping a deployment of the recipe's service that is being replaced (its node stays)."""
        if self.prometheus is not None and recipe.service is not None and recipe.service.metrics_path:
            self.prometheus.remove_target(recipe.name, dep.endpoint.host, dep.endpoint.port)

    def _node_exporter(self, dep: Deployment) -> Deployment | None:
        """A node exporter on the service's node, started by us unless one is already running for it.

        It binds where the service binds (loopback stays loopback); on Slurm it is a job on the
        service's node. Without the binary, node metrics are off and the run says so once.
        """
        key = dep.endpoint.slurm_node or dep.endpoint.node or "local"
        if key in self._node_exporters:
            return self._node_exporters[key]
        how = prom_monitor.runnable(self.orchestrator, "node_exporter", ("prometheus-node-exporter", "node_exporter"))
        if how is None:
            if key not in self._missing:
                self._missing.add(key)
                logger.warning("no node exporter on PATH (Debian: prometheus-node-exporter): node metrics are off")
            return None
        loopback = dep.endpoint.host.startswith(("127.", "::1", "localhost"))
        spec = ServiceSpec(
            command=[how[0], "--web.listen-address={host}:{port}"],
            **prom_monitor.container(how[1]),
            host=dep.endpoint.host if loopback else "0.0.0.0",
            health=HealthCheck(path="/metrics", timeout_s=30.0),
            resources=Resources(sbatch=[f"--nodelist={dep.endpoint.slurm_node}"] if dep.endpoint.slurm_node else []),
        )
        exporter = deploy_healthy(self.orchestrator, spec, key, self.root / "node-exporter" / key)
        self._node_exporters[key] = exporter
        return exporter

    def _ensure_prometheus(self, interval_s: float, retention: str) -> prom_monitor.Prometheus | None:
        if self.prometheus is None and self.note is None:
            how = prom_monitor.runnable(self.orchestrator, "prometheus", ("prometheus",))
            if how is None:
                self.note = "no 'prometheus' binary on PATH: server-side metrics are off"
                logger.warning(self.note)
                return None
            self.prometheus = prom_monitor.Prometheus.start(
                self.orchestrator, self.root, interval_s, retention, how[0], image=how[1]
            )
        return self.prometheus

    def collect(self, recipe: Recipe, run: Run, start: float, end: float) -> dict[str, Any] | None:
        """The recipe's queries over [start, end] (epoch seconds) and the client/server cross-check."""
        mon = recipe.monitor
        prom = self.prometheus
        if mon is None or prom is None or recipe.name not in self._jobs:
            return None
        if not prom.alive():
            note = f"Prometheus exited during the run (code {prom.deployment.exit_code}): no server-side data"
            return {"prometheus": prom.url, "window": [start, end], "complete": False, "note": note, "queries": {}}
        time.sleep(prom.interval_s * 1.5 + 0.2)  # let one more scrape land after the last request
        job = self._jobs[recipe.name]
        named = queries.resolve(mon.query_sets, mon.queries, prom.interval_s, job)
        values = prom_monitor.window_metrics(prom, named, start, end)
        complete = all("error" not in v for v in values.values())
        checks, read = cross_checks(prom, mon.query_sets, job, run.records, run.wall_t0)
        complete = complete and read
        out = {"prometheus": prom.url, "window": [start, end], "complete": complete, "queries": values,
               "cross_check": checks}  # fmt: skip
        return out | ({"monitor": self.watching.monitor} if self.watching else {})

    def close(self) -> None:
        if self._exporter is not None:
            exporter, self._exporter = self._exporter, None
            exporter.close()
        if self.prometheus is not None:
            prom, self.prometheus = self.prometheus, None
            if self.watching is None:
                self.orchestrator.stop(prom.deployment)
            for name, host, port in self._added:
                prom.remove_target(name, host, port)
        while self._node_exporters:
            _, node_exporter = self._node_exporters.popitem()
            self.orchestrator.stop(node_exporter)
