"""Services for a session: each recipe's service deployed once (or attached, under pytest-xdist) and every
one torn down at the end; a protocol's once-per-deployment preparation."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from filelock import FileLock, Timeout
from loguru import logger

from .. import protocols
from ..metrics.files import read_json, write_json
from ..metrics.results import ResultsDir
from ..monitor.prometheus import Prometheus
from ..monitor.watch import Monitoring, Watching
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
from ..orchestrators.health import deploy_healthy, probe, tcp_probe
from ..orchestrators.replicas import Member, replicated
from ..recipes.deployment import ServiceSpec
from ..recipes.fields import without_credentials
from ..recipes.loader import LoadedRecipe
from ..recipes.sweep import Case


class TargetUnreachable(ServiceError):
    """The service to benchmark could not be reached at all (CLI exit code 3)."""


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
        watching: Watching | None = None,
        target_key_file: str | None = None,
    ) -> None:
        """``shared``: several processes (pytest-xdist workers) use one deployment per recipe under
        ``root``; the first deploys it, the others attach, and ``stop_shared`` ends it once all are done.
        ``watching``: the monitor that already scrapes ``target_url``'s service, used instead of a new one.
        """
        self.root = root
        self.results = ResultsDir(root)
        self.shared = shared
        self.orchestrator = replicated(
            get_orchestrator(orchestrator) if isinstance(orchestrator, str) else orchestrator
        )
        self.target_url = target_url
        self.target_key_file = target_key_file  # the API key of a service started by 'server start'
        # Each sharing process watches with its own Prometheus, in its own directory.
        monitor_root = root / f"monitor-{os.getpid()}" if shared else root
        self.monitoring = Monitoring(self.orchestrator, monitor_root, watching) if monitoring else None
        self._deployed: dict[str, Deployment] = {}
        self._failed: dict[str, ServiceError] = {}

    def get(self, case: Case) -> Deployment:
        """The case's deployment, started on first use and scaled to the case's replicas; a failed start is
        not retried per case."""
        loaded = case.loaded
        key = self._key(case)
        if key in self._failed:
            raise self._failed[key]
        if key not in self._deployed:
            try:
                dep = self._deploy(loaded, case.replicas, key)
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
        dep = self._deployed[key]
        if dep.handle is not None and len(dep.endpoint.urls) != case.replicas:
            dep = self._scale(case, dep)
        return dep

    def _key(self, case: Case) -> str:
        """One deployment per recipe, scaled between replica counts; pytest-xdist workers share theirs, which
        none may scale under another's load: one per count there."""
        spec = case.recipe.service
        swept = spec is not None and isinstance(spec.replicas, list)
        return f"{case.recipe.name}-replicas={case.replicas}" if self.shared and swept else case.recipe.name

    def _scale(self, case: Case, dep: Deployment) -> Deployment:
        key = self._key(case)
        spec = self._spec(case.loaded)
        logger.info("{}: scaling from {} to {} replica(s)", dep.name, len(dep.endpoint.urls), case.replicas)
        if self.monitoring is not None:
            self.monitoring.unwatch(case.recipe, dep)
        try:
            dep = self.orchestrator.scale(dep, case.replicas, spec.model_copy(update={"replicas": 1}))
        except ServiceError as exc:
            self._failed[key] = exc
            raise
        self._deployed[key] = dep
        if self.monitoring is not None:
            self.monitoring.watch(case.recipe, dep)
        return dep

    def members(self, dep: Deployment) -> list[Member]:
        """Each replica's state."""
        return self.orchestrator.members(dep)

    def redeploy(self, case: Case) -> Deployment:
        """The case's service started afresh: a baseline's next run meets what a rerun in a new session
        meets (a new server process or job, with whatever state its start gives it). A target URL, or a
        deployment shared with pytest-xdist workers, is not ours to restart: the same one again."""
        key = self._key(case)
        old = self._deployed.get(key)
        if old is None or old.handle is None or self.shared:
            return self.get(case)
        del self._deployed[key]
        if self.monitoring is not None:
            self.monitoring.unwatch(case.recipe, old)
        self.orchestrator.stop(old)
        return self.get(case)

    def prepare(self, case: Case, dep: Deployment) -> dict[str, Any] | None:
        """A protocol's setup before load (a vector collection built, its exact answers computed), done
        once per deployment by the first case that needs it (in this process or, under xdist, any
        sharing one) and read back by the others: sweep points neither rebuild nor drop under each other
        what they share."""
        work = protocols.get(case.recipe.workload.protocol).preparation(case, dep.endpoint)
        if work is None:
            return None
        key, prepare = work.key, work.run
        dep.run_dir.mkdir(parents=True, exist_ok=True)
        # Per deployment: a new server process (or job) starts empty.
        marker = dep.run_dir / f"prepared-{key}-{dep.endpoint.pid or 0}-{dep.endpoint.job_id or 0}.json"
        with FileLock(str(dep.run_dir / "prepare.lock")):
            if marker.exists():
                logger.info("{}: using the collection prepared for an earlier case", case.id)
                done: dict[str, Any] = read_json(marker)
                return done
            logger.info("{}: preparing ({})", case.id, case.recipe.workload.protocol)
            phases = _within(prepare, case.recipe.workload.timeouts.setup_s, case.id) | {"prepared_by": case.id}
            write_json(marker, phases)
        return phases

    @contextmanager
    def load_turn(self, dep: Deployment | None) -> Iterator[None]:
        """Under pytest-xdist, cases that share a deployment take turns (a lock in its directory): two
        sweep points loading one server at once would each measure a share of it, and both be wrong."""
        if not self.shared or dep is None:
            yield
            return
        lock = FileLock(str(dep.run_dir / "load.lock"))
        try:
            lock.acquire(blocking=False)
        except Timeout:
            logger.info("{}: waiting for the other xdist worker's case on this service to finish", dep.name)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    @property
    def prometheus(self) -> Prometheus | None:
        """The session's Prometheus, once a monitored recipe has been deployed."""
        return self.monitoring.prometheus if self.monitoring else None

    def _spec(self, loaded: LoadedRecipe) -> ServiceSpec:
        """The recipe's service as deployed here: with the monitoring exporters its job runs."""
        spec = loaded.recipe.service
        if spec is None:
            raise ServiceError(f"{loaded.recipe.name}: the recipe has no service to deploy")
        if self.monitoring is not None and spec.command is not None:  # exporters in the service's own job
            spec = spec.model_copy(update={"sidecars": [*spec.sidecars, *self.monitoring.sidecars(loaded.recipe)]})
        return spec

    def _deploy(self, loaded: LoadedRecipe, replicas: int, key: str) -> Deployment:
        spec = self._spec(loaded)
        run_dir = self.results.service_dir(key)
        url = self.target_url or spec.url
        if url is not None:
            if without_credentials(url) != url:
                url = without_credentials(url)
                said = "credentials in the target URL are neither sent nor written anywhere; give them with"
                logger.warning("{}: {} workload.api_key_env or headers from ${{VAR}}", loaded.recipe.name, said)
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
            endpoint = Endpoint(parts.hostname, port, url.rstrip("/"), key_file=self.target_key_file)
            run_dir.mkdir(parents=True, exist_ok=True)
            if not self.shared:  # what an earlier session prepared there may be gone: prepare again
                for stale in run_dir.glob("prepared-*.json"):
                    stale.unlink(missing_ok=True)
            endpoint.write(run_dir / "endpoint.json")
            return Deployment(loaded.recipe.name, endpoint, run_dir, None, None)
        spec = spec.model_copy(update={"replicas": replicas})
        if self.shared:
            return _deploy_shared(self.orchestrator, spec, loaded.recipe.name, run_dir)
        return deploy_healthy(self.orchestrator, spec, loaded.recipe.name, run_dir)

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
        dep = deploy_healthy(orch, spec, name, run_dir, detach=True)
        try:
            write_json(record, to_record(orch, dep))
        except BaseException:
            orch.stop(dep)
            raise
        return dep


def _attach_shared(orch: Orchestrator, record: Path) -> Deployment:
    return from_record(orch, record.parent.name, read_json(record))


def stop_shared(root: Path, orch: Orchestrator) -> list[str]:
    """Stop every shared deployment under ``root`` (the pytest-xdist controller, at session end)."""
    stopped = []
    for record in sorted(ResultsDir(root).services.glob(f"*/{SHARED_RECORD}")):
        try:
            dep = _attach_shared(orch, record)
            orch.stop(dep)
            stopped.append(dep.name)
        except Exception as exc:  # keep stopping the others
            logger.error("failed to stop the shared service in {}: {}", record.parent, exc)
        record.unlink(missing_ok=True)
    return stopped


def _within(work: Callable[[], dict[str, Any]], seconds: float, what: str) -> dict[str, Any]:
    """A protocol's preparation (a client library's calls) given a total deadline: past it the case ends
    as a service error naming it (the thread is left to the service's own shutdown)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="ubench-prepare")
    try:
        return pool.submit(work).result(timeout=seconds)
    except FutureTimeout:
        raise ServiceError(f"{what}: the protocol's setup did not finish within {seconds:g} s "
                           "(workload.timeouts.setup_s)") from None  # fmt: skip
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
