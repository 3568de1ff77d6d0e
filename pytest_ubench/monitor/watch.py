"""Monitoring for a benchmark session: one Prometheus, the load client's exporter, the dashboard.

``session.Services`` deploys the services; this watches them. Kept apart so the session stays
about deploying and running cases, and monitoring can be switched off as one piece.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from ..load.engine import Observer, Run
from ..metrics import server_queries as queries
from ..orchestrators.base import Deployment, Orchestrator
from ..orchestrators.health import deploy_healthy
from ..orchestrators.replicas import member_dir
from ..recipes.deployment import HealthCheck, ServiceSpec, Sidecar
from ..recipes.schema import Monitor, Recipe
from . import client_metrics, grafana
from . import prometheus as prom_monitor
from .client_metrics import ClientExporter
from .cross_check import cross_checks

# The exporters a recipe's monitoring runs on its service's node: each one's executables (Debian's name
# first, the image's last), how it is told where to listen, and its scrape job's prefix.
EXPORTERS: dict[str, tuple[tuple[str, ...], list[str], str]] = {
    "node_exporter": (("prometheus-node-exporter", "node_exporter"), ["--web.listen-address={host}:{port}"], "node"),
    "dcgm_exporter": (("dcgm-exporter",), ["--address", "{host}:{port}"], "dcgm"),
}


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
        self._exporters: dict[str, Deployment] = {}  # exporters started here: one per part and node
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
        prom = self._ensure_prometheus(mon)
        if prom is None:
            return
        targets: list[tuple[str, str, int, str, str]] = []
        job = recipe.name
        if self.watching is not None:
            job = self.watching.job  # scraped there already, under its id
        elif recipe.service is not None and recipe.service.metrics_path:
            for host, port in dep.endpoint.addresses:  # every replica, one instance each, under the recipe's job
                targets.append((recipe.name, host, port, recipe.service.metrics_path, dep.endpoint.scheme))
        nodes = recipe.service.resources.nodes if recipe.service is not None else 1
        for exporter in self._exporters_of(recipe):
            for node, host, port in self._exporters_at(dep, exporter, mon, nodes):
                targets.append((f"{EXPORTERS[exporter.name][2]}-{node}", host, port, "/metrics", "http"))
        for extra in mon.targets:
            extra_host, _, extra_port = extra.rpartition(":")
            targets.append((f"{recipe.name}-{extra}", extra_host, int(extra_port), "/metrics", "http"))
        added = [(name, self._add(prom, name, host, port, path, scheme)) for name, host, port, path, scheme in targets]
        if self._exporter is None:
            # Our own exporter, always up: waiting for its first scrape absorbs Prometheus' start-up
            # (~6 s to the first scrape, measured), so the recipe's timeout is left for its own targets.
            # On a cluster Prometheus runs on a compute node and scrapes this host by its name.
            remote = self.orchestrator.remote
            self._exporter = ClientExporter("0.0.0.0" if remote else "127.0.0.1")
            here = socket.gethostname() if remote else self._exporter.host
            instance = self._add(prom, client_metrics.JOB, here, self._exporter.port)
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
            for host, port in dep.endpoint.addresses:
                self.prometheus.remove_target(recipe.name, host, port)

    def _exporters_of(self, recipe: Recipe) -> list[Sidecar]:
        """The recipe's exporters that can run (:meth:`Monitor.parts`), each as it runs (its executable and
        listen options, from its image or the binary on PATH), and only where one of those is (said once
        otherwise)."""
        if recipe.monitor is None:
            return []
        gpus = recipe.service.resources.gpus if recipe.service is not None else 0
        if "dcgm" in recipe.monitor.query_sets and not gpus:
            self._say_once("dcgm_exporter", f"{recipe.name}: the dcgm query set needs a service with GPUs "
                                            "(service.resources.gpus): no DCGM exporter")  # fmt: skip
        found = []
        for part in recipe.monitor.parts(gpus):
            if part not in EXPORTERS:
                continue
            binaries, args, _ = EXPORTERS[part]
            how = prom_monitor.runnable(self.orchestrator, part, binaries, recipe.monitor)
            if how is None:
                self._say_once(part, f"no {' or '.join(binaries)} on PATH and no image for it in the cluster "
                                     f"profile (monitor_images.{part}): its metrics are off")  # fmt: skip
                continue
            found.append(Sidecar(name=part, command=[how[0], *args], image=how[1]))
        return found

    def _say_once(self, key: str, text: str) -> None:
        if key not in self._missing:
            self._missing.add(key)
            logger.warning(text)

    def sidecars(self, recipe: Recipe) -> list[Sidecar]:
        """The exporters to start in the service's own job, where the orchestrator runs them so."""
        return self._exporters_of(recipe) if self.orchestrator.remote else []

    def _exporters_at(self, dep: Deployment, exporter: Sidecar, mon: Monitor, nodes: int) -> list[tuple[str, str, int]]:
        """(node, host, port) of the exporter on each of the service's ``nodes``: the sidecars its job
        started (those on other nodes may write their address a moment after the service is healthy), or
        (on this machine) one started here unless one is already running. It binds where the service
        binds (loopback stays loopback)."""
        part = exporter.name
        if self.orchestrator.remote:
            if not (dep.run_dir / f"{part}.json").exists():  # the head's, written before the service started
                logger.warning("{}: no {} was started in its job (a service started without monitoring)",
                               dep.name, part)  # fmt: skip
                return []
            # Each replica's job runs its own; two replicas on one node: that node's figures once.
            at_node: dict[str, tuple[str, str, int]] = {}
            for index in range(len(dep.endpoint.urls)):
                for at in self._sidecars_written(member_dir(dep.run_dir, index), dep.name, part, nodes, mon):
                    at_node.setdefault(at[0], at)
            return list(at_node.values())
        node = dep.endpoint.node or "local"
        key = f"{part}:{node}"
        if key not in self._exporters:
            loopback = dep.endpoint.host.startswith(("127.", "::1", "localhost"))
            spec = ServiceSpec(
                command=exporter.command,
                **prom_monitor.container(exporter.image),
                host=dep.endpoint.host if loopback else "0.0.0.0",
                health=HealthCheck(path="/metrics", timeout_s=30.0),
            )
            where = self.root / part.replace("_", "-") / node
            self._exporters[key] = deploy_healthy(self.orchestrator, spec, f"{EXPORTERS[part][2]}-{node}", where)
        here = self._exporters[key]
        return [(node, here.endpoint.host, here.endpoint.port)]

    @staticmethod
    def _sidecars_written(job_dir: Path, name: str, part: str, nodes: int, mon: Monitor) -> list[tuple[str, str, int]]:
        """(node, host, port) of the exporters one job's sidecars wrote: the head's before the service
        started, those on other nodes maybe a moment after it is healthy."""
        deadline = time.monotonic() + mon.target_timeout_s
        while True:
            written = sorted(job_dir.glob(f"{part}.json")) + sorted(job_dir.glob(f"{part}-*.json"))
            if len(written) >= nodes or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if len(written) < nodes:
            logger.warning("{}: {} of {} nodes wrote where their {} listens (see its log on the others)",
                           name, len(written), nodes, part)  # fmt: skip
        found = [json.loads(path.read_text(encoding="utf-8")) for path in written]
        return [(str(at["node"]), str(at["host"]), int(at["port"])) for at in found]

    def _ensure_prometheus(self, mon: Monitor) -> prom_monitor.Prometheus | None:
        """The session's one Prometheus, started for the first recipe that monitors (its settings)."""
        if self.prometheus is None and self.note is None:
            how = prom_monitor.runnable(self.orchestrator, "prometheus", ("prometheus",), mon)
            if how is None:
                self.note = "no 'prometheus' binary on PATH: server-side metrics are off"
                logger.warning(self.note)
                return None
            self.prometheus = prom_monitor.Prometheus.start(
                self.orchestrator, self.root, mon.interval_s, mon.retention, how[0], image=how[1]
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
        while self._exporters:
            _, exporter_dep = self._exporters.popitem()
            self.orchestrator.stop(exporter_dep)
