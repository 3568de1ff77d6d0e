"""Readiness: poll the health path until it answers 200, the process dies, or time runs out; and the
one way every service (the one under test, Prometheus, exporters, Grafana) is started: deployed, then
waited for until healthy, or stopped."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
from loguru import logger

from ..recipes.deployment import HealthCheck, ServiceSpec
from . import control
from .base import Deployment, Orchestrator, ServiceError, ServiceState, tls_context


def deploy_healthy(
    orchestrator: Orchestrator, spec: ServiceSpec, name: str, run_dir: Path, detach: bool = False
) -> Deployment:
    """Start a service and wait until it is healthy; on any failure nothing is left running."""
    dep = orchestrator.deploy(spec, name, run_dir, detach=detach)
    try:
        wait_healthy(orchestrator, dep, spec.health)
    except BaseException:
        orchestrator.stop(dep)
        raise
    return dep


def wait_healthy(orch: Orchestrator, dep: Deployment, health: HealthCheck) -> float:
    """Return seconds until healthy; raise ServiceError with the reason and the log tail."""
    where = f"port {dep.endpoint.port}" if health.kind == "tcp" else dep.endpoint.url + health.path
    start = time.monotonic()
    deadline = start + health.timeout_s
    with httpx.Client(trust_env=False, verify=tls_context()) as client:
        while True:
            state = orch.status(dep)
            if state in (ServiceState.FAILED, ServiceState.STOPPED):
                raise ServiceError(
                    f"{dep.name}: service exited with code {dep.exit_code} before becoming healthy"
                    f"{f' ({dep.detail})' if dep.detail else ''}\n"
                    f"--- last lines of {dep.log_path} ---\n{orch.logs(dep)}"
                )
            last = _check(client, dep, health, max(0.2, min(5.0, deadline - time.monotonic())))
            if last is None:
                waited = time.monotonic() - start
                logger.info("{} healthy at {} after {:.2f} s", dep.name, dep.endpoint.url, waited)
                return waited
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"{dep.name}: not healthy at {where} after {health.timeout_s:g} s (last: {last})\n"
                    f"--- last lines of {dep.log_path} ---\n{orch.logs(dep)}"
                )
            time.sleep(health.interval_s)


def _check(client: httpx.Client, dep: Deployment, health: HealthCheck, deadline_s: float) -> str | None:
    """One health check, answered within ``deadline_s`` (a path that drips its answer is not healthy)."""
    if health.kind == "tcp":
        return tcp_probe(dep.endpoint.host, dep.endpoint.port)
    try:
        resp = control.call(client, "GET", dep.endpoint.url + health.path, deadline_s)
    except control.SideCallFailed as exc:
        return str(exc)
    return None if resp.status_code == 200 else f"HTTP {resp.status_code}"


def tcp_probe(host: str, port: int, timeout_s: float = 2.0) -> str | None:
    """Whether the port accepts a connection (a database or cache without an HTTP health path)."""
    try:
        socket.create_connection((host, port), timeout_s).close()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return None


def probe(url: str, timeout_s: float = 5.0, require_ok: bool = False) -> str | None:
    """One check of an already running service; returns the problem, or None.

    By default any HTTP answer counts (a service without a health path is still reachable);
    ``require_ok`` asks for a 200, as a health check does.
    """
    try:
        with httpx.Client(trust_env=False, verify=tls_context()) as client:
            resp = control.call(client, "GET", url, timeout_s)
    except control.SideCallFailed as exc:
        return str(exc).removeprefix(f"{url}: ")
    if require_ok and resp.status_code != 200:
        return f"HTTP {resp.status_code}"
    return None
