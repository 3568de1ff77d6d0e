"""Slurm orchestrator: the service runs as a batch job; we find it through the endpoint file it writes.

Waiting is a poll with backoff on ``squeue`` and the endpoint file, so a healthy service is seen
within tens of milliseconds of binding, while a job that fails, is cancelled or sits in the queue says
so (state, reason, log tail) instead of leaving us waiting. Jobs submitted by this process without
``detach`` are cancelled at interpreter exit, like local processes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loguru import logger

from ...recipes.deployment import ClusterProfile, Resources, ServiceSpec
from .. import apptainer, keys
from ..base import Deployment, Endpoint, MissingVariable, ServiceError, ServiceState, tail
from ..placeholders import env_references
from . import script
from .commands import JobInfo, Slurm
from .runner import SlurmError

_LIVE: dict[str, tuple[Slurm, str]] = {}
_LOOPBACK = ("127.", "::1", "localhost")
DEFAULT_PROFILE = ClusterProfile(name="default")


@dataclass
class SlurmJob:
    job_id: str
    script: Path
    heartbeat: Heartbeat | None = None  # kept fresh while this process uses the job


class Heartbeat:
    """Touches a job's heartbeat file from a thread while the harness lives; the job's watcher stops
    the job once the file goes stale (the harness was killed: nothing else would cancel it)."""

    def __init__(self, path: Path, limit_s: float) -> None:
        self.path = path
        self._stop = threading.Event()
        self.touch()
        self._thread = threading.Thread(target=self._beat, args=(max(0.5, limit_s / 4),), daemon=True,
                                        name="ubench-heartbeat")  # fmt: skip
        self._thread.start()

    def touch(self) -> None:
        with contextlib.suppress(OSError):  # a full or gone disk: the job's own deadline still holds
            self.path.touch()

    def _beat(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.touch()

    def stop(self) -> None:
        self._stop.set()


class Backoff:
    """Poll intervals: every ``fast`` seconds while a start is likely (a job often runs within a second,
    and each poll is one cheap ``squeue``), then growing to ``most`` to spare slurmctld on a long wait.
    """

    def __init__(self, fast: float = 0.05, fast_for: float = 10.0, most: float = 2.0) -> None:
        self.interval, self.most = fast, most
        self.slow_after = time.monotonic() + fast_for

    def sleep(self) -> None:
        time.sleep(self.interval)
        if time.monotonic() > self.slow_after:
            self.interval = min(self.most, self.interval * 1.5)


class SlurmOrchestrator:
    name = "slurm"
    remote = True

    def __init__(
        self,
        profile: ClusterProfile | None = None,
        slurm: Slurm | None = None,
        stop_timeout_s: float = 60.0,
    ) -> None:
        self.profile = profile or DEFAULT_PROFILE
        self.slurm = slurm or Slurm()
        self.stop_timeout_s = stop_timeout_s

    def placeholders(self) -> dict[str, str]:
        return script.site_values(self.profile, os.environ)

    def monitor_image(self, name: str) -> str | None:
        image: str | None = getattr(self.profile.monitor_images, name)
        return image

    def pull(self, image: str) -> Path:
        """On the submitting node; the profile's ``images`` may name a site's own copy of the image."""
        return apptainer.pull(self.profile.images.get(image, image), script.image_cache(self.profile, os.environ))

    def dry_run(
        self, spec: ServiceSpec, name: str, run_dir: Path, detach: bool = False, key_file: Path | None = None
    ) -> str:
        """The batch script; one the harness watches (not ``detach``) stops when its heartbeat stops.
        Without ``key_file`` (a dry run), a key file's name stands for the one a deployment would make."""
        if keys.keyed(spec) and key_file is None:
            key_file = keys.directory() / f"{name}-<made per deployment>.key"
        return script.render(
            spec,
            name=name,
            job_name=f"ubench-{name}",
            run_dir=run_dir.absolute(),
            profile=self.profile,
            python=sys.executable,
            environ=os.environ,
            heartbeat_s=0.0 if detach else self.profile.heartbeat_s,
            key_file=key_file,
        )

    def deploy(self, spec: ServiceSpec, name: str, run_dir: Path, detach: bool = False) -> Deployment:
        assert spec.command is not None
        missing = sorted(
            {v for t in [*spec.command, *spec.env.values()] for v in env_references(t) if v not in os.environ}
        )
        if missing:
            raise MissingVariable(f"{name}: the recipe reads {', '.join(missing)} from the environment; not set here")
        run_dir = run_dir.absolute()
        run_dir.mkdir(parents=True, exist_ok=True)
        if spec.container is not None:  # here, on the submitting node, before the job asks for its nodes
            self.pull(spec.container.image)
        key_file = keys.for_service(spec, name, detach)
        try:
            text = self.dry_run(spec, name, run_dir, detach, key_file)
        except BaseException:
            keys.discard(spec, key_file)
            raise
        path = run_dir / "job.sbatch"
        path.write_text(text + "\n", encoding="utf-8")
        path.chmod(0o700)
        for stale in ("endpoint.json", "exit_code"):
            (run_dir / stale).unlink(missing_ok=True)
        beat = (
            None
            if detach or not self.profile.heartbeat_s
            else Heartbeat(run_dir / "heartbeat", self.profile.heartbeat_s)
        )
        try:
            job_id = self.slurm.submit(path)
        except SlurmError as exc:
            if beat is not None:
                beat.stop()
            keys.discard(spec, key_file)
            raise ServiceError(f"{name}: cannot submit {path}: {exc}") from None
        logger.info("{}: submitted job {} ({})", name, job_id, path)
        job = SlurmJob(job_id, path, beat)
        key = str(key_file) if key_file else None
        dep = Deployment(
            name, Endpoint("", 0, "", key_file=key), run_dir, run_dir / "service.log", list(spec.command), handle=job
        )
        if not detach:
            _LIVE[job_id] = (self.slurm, name)
        try:
            dep.endpoint = self._wait_for_endpoint(dep)
        except BaseException:
            if spec.replica is not None and spec.replica.key_file is not None:
                dep.endpoint = replace(dep.endpoint, key_file=None)  # its replicas' key: they run on
            self.stop(dep)
            raise
        return dep

    def _wait_for_endpoint(self, dep: Deployment) -> Endpoint:
        job: SlurmJob = dep.handle
        endpoint_file = dep.run_dir / "endpoint.json"
        deadline = time.monotonic() + self.profile.queue_timeout_s
        backoff = Backoff()
        said = ""
        while True:
            if endpoint_file.exists():
                endpoint = Endpoint.read(endpoint_file)
                if dep.endpoint.key_file:  # where the load clients (here or on other nodes) find the key
                    endpoint = replace(endpoint, key_file=dep.endpoint.key_file)
                    endpoint.write(endpoint_file)
                self._check_reachable(dep.name, endpoint)
                logger.info("{}: job {} running on {} at {}", dep.name, job.job_id, endpoint.node, endpoint.url)
                return endpoint
            info = self._info(job)
            if not info.active:
                dep.exit_code = info.exit_code
                raise ServiceError(
                    f"{dep.name}: {info.describe()} before the service started\n"
                    f"--- last lines of {dep.log_path} ---\n{self.logs(dep)}"
                )
            if info.hopeless:
                raise ServiceError(
                    f"{dep.name}: {info.describe()}: the job can never start (the request exceeds what the "
                    "partition, QOS or account allows); cancelled"
                )
            news = f"{info.state} ({info.reason})" if info.state == "PENDING" else info.state
            if news != said:
                logger.info("{}: job {} {}", dep.name, job.job_id, news)
                said = news
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"{dep.name}: job {job.job_id} still {news} after {self.profile.queue_timeout_s:g} s; cancelled"
                )
            backoff.sleep()

    @staticmethod
    def _check_reachable(name: str, endpoint: Endpoint) -> None:
        """A loopback-bound service on another node cannot be reached from here: say so, do not time out."""
        if endpoint.host.startswith(_LOOPBACK) and endpoint.node and endpoint.node != socket.gethostname():
            raise ServiceError(
                f"{name}: the service listens on {endpoint.host} on node {endpoint.node}, which this host "
                f"({socket.gethostname()}) cannot reach; set 'service.host: 0.0.0.0' in the recipe"
            )

    def _info(self, job: SlurmJob) -> JobInfo:
        """The job's state; once it has left the controller, from accounting or its own exit-code file."""
        info = self.slurm.query(job.job_id)
        if info is not None and info.active:
            return info
        final = self.slurm.final(job.job_id) or info
        code = final.exit_code if final is not None else None
        if code is None:
            code = _read_exit_code(job.script.parent / "exit_code")
        state = final.state if final is not None else ("COMPLETED" if code == 0 else "FAILED")
        return JobInfo(job.job_id, state, final.reason if final else "", final.nodes if final else "", code)

    def describe(self, dep: Deployment) -> dict[str, Any]:
        job: SlurmJob = dep.handle
        return {"job_id": job.job_id, "script": str(job.script)}

    def attach(self, dep: Deployment, data: dict[str, Any]) -> Deployment:
        dep.handle = SlurmJob(str(data["job_id"]), Path(data["script"]))
        return dep

    def status(self, dep: Deployment) -> ServiceState:
        info = self._info(dep.handle)
        if info.state == "RUNNING":
            return ServiceState.RUNNING
        if info.active:
            return ServiceState.PENDING if info.state == "PENDING" else ServiceState.STARTING
        dep.exit_code, dep.detail = info.exit_code, info.describe()
        return ServiceState.STOPPED if info.state == "COMPLETED" and not info.exit_code else ServiceState.FAILED

    def logs(self, dep: Deployment, lines: int = 40) -> str:
        return tail(dep.log_path, lines)

    def stop(self, dep: Deployment) -> None:
        """Cancel the job and wait until the controller no longer counts it as active."""
        job: SlurmJob = dep.handle
        _LIVE.pop(job.job_id, None)
        start = time.monotonic()
        cancel_and_wait(self.slurm, job.job_id, self.stop_timeout_s)
        if job.heartbeat is not None:
            job.heartbeat.stop()
        keys.remove(dep.endpoint.key_file)
        info = self._info(job)
        dep.exit_code = info.exit_code
        logger.info("{}: job {} gone after {:.2f} s ({})", dep.name, job.job_id, time.monotonic() - start, info.state)

    def run_tasks(
        self,
        what: str,
        job_name: str,
        resources: Resources,
        command: list[str],
        out_dir: Path,
        on_running: Callable[[float], None] | None = None,
    ) -> None:
        """One job of tasks that end by themselves, watched to its end; cancelled on any error, Ctrl-C
        included, so nothing is left queued."""
        text = script.render_clients(
            resources,
            job_name=job_name,
            out_dir=out_dir,
            profile=self.profile,
            worker=command,
            environ=os.environ,
            heartbeat_s=self.profile.heartbeat_s,
        )
        path = out_dir / "clients.sbatch"
        beat = Heartbeat(out_dir / "heartbeat", self.profile.heartbeat_s) if self.profile.heartbeat_s else None
        try:
            path.write_text(text + "\n", encoding="utf-8")
            try:
                job_id = self.slurm.submit(path)
            except SlurmError as exc:
                raise ServiceError(f"{what}: cannot submit the load clients ({path}): {exc}") from None
            logger.info("{}: client job {} ({} tasks)", what, job_id, resources.nodes * resources.tasks_per_node)
            started: float | None = None
            backoff = Backoff(fast=0.1)
            try:
                while (info := self.slurm.query(job_id)) is not None and info.active:
                    if info.hopeless:
                        raise ServiceError(f"{what}: client {info.describe()}: the job can never start")
                    if info.state == "RUNNING":
                        started = started or time.monotonic()
                        if on_running is not None:
                            on_running(time.monotonic() - started)
                    backoff.sleep()
            except BaseException:
                cancel_and_wait(self.slurm, job_id, self.stop_timeout_s)
                raise
            final = self.slurm.final(job_id)
            if final is not None and final.exit_code not in (0, None):
                log = out_dir / "clients.log"
                last = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise ServiceError(f"{what}: load clients {final.describe()}\n--- {log} ---\n{last}")
        finally:
            if beat is not None:
                beat.stop()


def cancel_and_wait(slurm: Slurm, job_id: str, timeout_s: float) -> None:
    """scancel, then wait until the controller no longer counts the job as active."""
    slurm.cancel(job_id)
    deadline = time.monotonic() + timeout_s
    backoff = Backoff(fast=0.02, most=0.5)
    while (info := slurm.query(job_id)) is not None and info.active:
        if time.monotonic() >= deadline:
            raise ServiceError(f"job {job_id} still {info.state} {timeout_s:g} s after scancel")
        backoff.sleep()


def _read_exit_code(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


@atexit.register
def cancel_all() -> None:
    """Last line of defence: no job this process submitted (undetached) stays in the queue."""
    for job_id, (slurm, name) in list(_LIVE.items()):
        _LIVE.pop(job_id, None)
        with contextlib.suppress(Exception):
            logger.warning("{}: cancelling job {} at exit", name, job_id)
            cancel_and_wait(slurm, job_id, 30.0)
