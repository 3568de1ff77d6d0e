"""Local orchestrator: the service is a child process in its own process group.

Stopping signals the whole group, so helpers the service spawned go too. Every live service is
also tracked in this module so an interpreter exit (normal, Ctrl-C, SIGTERM turned into an
exception) tears it down, and on Linux the child asks the kernel for SIGTERM if we die hard.
A *detached* service (``ubenchai server start``) is exempt from both: it outlives the command and
is found again by pid and start time, so a recycled pid is never mistaken for it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from loguru import logger

from ..metrics.files import user_cache
from ..recipes.deployment import Resources, ServiceSpec
from . import apptainer, keys, watchdog
from .base import Deployment, Endpoint, ServiceError, ServiceState, tail
from .placeholders import expand
from .ports import free_port
from .slurm import SlurmOrchestrator

_LIVE: dict[int, LocalProcess] = {}


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _in_child(die_with_parent: bool, cpus: list[int]) -> Callable[[], None] | None:
    """What the child does before it runs the service: ask to die with us, and keep to its replica's cores
    (set before exec, so every thread the server starts inherits them)."""
    if not die_with_parent and not cpus:
        return None

    def prepare() -> None:
        if die_with_parent:
            _die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return prepare


@dataclass
class LocalProcess:
    """The service's process-group leader: our child, or a pid recorded by an earlier command."""

    pid: int
    create_time: float
    popen: subprocess.Popen[bytes] | None = None

    @classmethod
    def attach(cls, pid: int, create_time: float) -> LocalProcess:
        """A process started by an earlier command: known by pid and start time, not as a child."""
        return cls(pid, create_time)

    def exit_code(self) -> int | None:
        """None while running; the exit code (or -1 when not our child) once it has gone."""
        if self.popen is not None:
            return self.popen.poll()
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                return None
        except psutil.NoSuchProcess:
            pass
        return -1

    def wait(self, timeout: float) -> bool:
        if self.popen is not None:
            try:
                self.popen.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while self.exit_code() is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


class LocalOrchestrator:
    name = "local"
    remote = False

    def __init__(self, stop_timeout_s: float = 10.0) -> None:
        self.stop_timeout_s = stop_timeout_s

    def _command(
        self, spec: ServiceSpec, argv: list[str], env: dict[str, str], binary: str = "apptainer"
    ) -> tuple[list[str], dict[str, str]]:
        """Wrap a command and its environment in the recipe's container, if it has one."""
        if spec.container is None:
            return argv, env
        sif = apptainer.image_path(spec.container.image, self.image_cache())
        wrapped = apptainer.command(spec.container, sif, spec.resources.gpus, binary=binary)
        return wrapped + argv, apptainer.env(env, binary)

    def image_cache(self) -> Path:
        return apptainer.cache_dir()

    def monitor_image(self, name: str) -> str | None:
        return None

    def pull(self, image: str) -> Path:
        return apptainer.pull(image, self.image_cache())

    def placeholders(self) -> dict[str, str]:
        return {"scratch": str(user_cache("scratch"))}  # what a cluster's scratch is to a recipe

    def dry_run(self, spec: ServiceSpec, name: str, run_dir: Path) -> str:
        """The command as the recipe writes it: placeholders and ``${VAR}`` unexpanded, so no secret shows."""
        assert spec.command is not None
        argv, env = self._command(spec, list(spec.command), dict(spec.env))
        return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(argv)])

    def deploy(self, spec: ServiceSpec, name: str, run_dir: Path, detach: bool = False) -> Deployment:
        run_dir.mkdir(parents=True, exist_ok=True)
        port = free_port(spec.host) if spec.port == "auto" else int(spec.port)
        assert spec.command is not None
        if spec.multinode is not None:
            raise ServiceError(f"{name}: a service on {spec.resources.nodes} nodes needs the slurm orchestrator")
        if spec.key_front:
            raise ServiceError(f"{name}: service.key_front puts a key-checking front in the service's Slurm job: "
                               "it needs the slurm orchestrator (here, bind the service to loopback)")  # fmt: skip
        slot = spec.replica
        values = {"host": spec.host, "port": str(port), "python": sys.executable, "run_dir": str(run_dir),
                  "head": socket.gethostname(), "nodes": "1", "replica": str(slot.index if slot else 0),
                  **self.placeholders()}  # fmt: skip
        binary, contained = "apptainer", spec  # contained: its binds expanded
        if spec.container is not None:
            binary = apptainer.runtime()
            self.pull(spec.container.image)
            container = spec.container.model_copy(update={"binds": [expand(b, values) for b in spec.container.binds]})
            for source in apptainer.scratch_sources(container.binds, values["scratch"]):
                Path(source).mkdir(parents=True, exist_ok=True)
            contained = spec.model_copy(update={"container": container})
        command = [expand(a, values) for a in spec.command]
        service_env = {k: expand(v, values) for k, v in spec.env.items()}
        key_file = keys.for_service(spec, name, detach)
        if key_file is not None and spec.api_key_env is not None:
            service_env[spec.api_key_env] = keys.read(key_file)
        argv, extra_env = self._command(contained, command, service_env, binary)
        env = os.environ.copy()
        env.update(extra_env)
        log_path = run_dir / "service.log"
        logger.info("starting {} on {}:{}: {}", name, spec.host, port, " ".join(spec.command))
        with log_path.open("ab") as log:
            try:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=expand(spec.workdir, values) if spec.workdir else None,
                    # Its own process group (stopped as one), and a session of its own only when it must
                    # outlive this one (server start). A new session is also a new scheduling autogroup
                    # (Linux's default): CPU is then shared per session, not per thread, and a vLLM in
                    # its own session beside the client stalled all its streams for 0.1-0.5 s tens of
                    # times in 20 s on 2 cores (none in the harness's session; docs/vllm.md).
                    start_new_session=detach,
                    process_group=None if detach else 0,
                    preexec_fn=_in_child(not detach, slot.cpus if slot else []),
                )
            except OSError as exc:
                keys.discard(spec, key_file)
                raise ServiceError(f"{name}: cannot start {argv[0]!r}: {exc.strerror or exc}") from None
        try:
            created = psutil.Process(popen.pid).create_time()
        except psutil.NoSuchProcess:  # exited at once; readiness reports it with its log
            created = 0.0
        proc = LocalProcess(popen.pid, created, popen)
        if not detach:
            _LIVE[proc.pid] = proc
            watchdog.guard_group(proc.pid)  # its whole process group dies with this process, even by SIGKILL
        host = f"[{spec.host}]" if ":" in spec.host else spec.host
        scheme = "https" if spec.tls else "http"
        key = str(key_file) if key_file else None
        endpoint = Endpoint(spec.host, port, f"{scheme}://{host}:{port}", pid=proc.pid, key_file=key)
        endpoint.write(run_dir / "endpoint.json")
        # The recipe's command (placeholders, not expanded secrets) is what goes into results.
        return Deployment(name, endpoint, run_dir, log_path, list(spec.command), handle=proc)

    def describe(self, dep: Deployment) -> dict[str, Any]:
        proc: LocalProcess = dep.handle
        return {"pid": proc.pid, "create_time": proc.create_time}

    def attach(self, dep: Deployment, data: dict[str, Any]) -> Deployment:
        dep.handle = LocalProcess.attach(int(data["pid"]), float(data["create_time"]))
        return dep

    def status(self, dep: Deployment) -> ServiceState:
        code = dep.handle.exit_code()
        if code is None:
            return ServiceState.RUNNING
        dep.exit_code = code
        return ServiceState.STOPPED if code == 0 else ServiceState.FAILED

    def logs(self, dep: Deployment, lines: int = 40) -> str:
        return tail(dep.log_path, lines)

    def stop(self, dep: Deployment) -> None:
        proc: LocalProcess = dep.handle
        _terminate(proc, self.stop_timeout_s)
        watchdog.release_group(proc.pid)
        dep.exit_code = proc.exit_code()
        keys.remove(dep.endpoint.key_file)
        logger.info("stopped {} (pid {}, exit {})", dep.name, proc.pid, dep.exit_code)

    def run_tasks(
        self,
        what: str,
        job_name: str,
        resources: Resources,
        command: list[str],
        out_dir: Path,
        on_running: Callable[[float], None] | None = None,
    ) -> None:
        """A job of tasks (``workload.orchestration: slurm``) goes to Slurm with its default profile: a
        service running here can still be loaded from a cluster's nodes."""
        SlurmOrchestrator().run_tasks(what, job_name, resources, command, out_dir, on_running)


def _terminate(proc: LocalProcess, timeout: float) -> None:
    _LIVE.pop(proc.pid, None)
    if proc.exit_code() is None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            if proc.wait(wait):
                break
            logger.warning("pid {} ignored {}; escalating", proc.pid, sig.name)
    # Members of the group may outlive the leader; make sure none is left. Only our own group: a
    # recycled pid (leader gone long ago, not our child) is left alone.
    if proc.popen is not None or proc.create_time:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@atexit.register
def stop_all() -> None:
    """Last line of defence: nothing this process started (undetached) may outlive it."""
    for proc in list(_LIVE.values()):
        _terminate(proc, 5.0)
