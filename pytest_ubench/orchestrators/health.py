"""Readiness: poll the health path until it answers 200, the process dies, or time runs out."""

from __future__ import annotations

import time

import httpx
from loguru import logger

from ..load.http import tls_context
from ..recipes.schema import HealthCheck
from .base import Deployment, Orchestrator, ServiceError, ServiceState


def wait_healthy(orch: Orchestrator, dep: Deployment, health: HealthCheck) -> float:
    """Return seconds until healthy; raise ServiceError with the reason and the log tail."""
    url = dep.endpoint.url + health.path
    start = time.monotonic()
    deadline = start + health.timeout_s
    last = "no answer yet"
    with httpx.Client(timeout=min(5.0, health.timeout_s), trust_env=False, verify=tls_context()) as client:
        while True:
            state = orch.status(dep)
            if state in (ServiceState.FAILED, ServiceState.STOPPED):
                raise ServiceError(
                    f"{dep.name}: service exited with code {dep.exit_code} before becoming healthy"
                    f"{f' ({dep.detail})' if dep.detail else ''}\n"
                    f"--- last lines of {dep.log_path} ---\n{orch.logs(dep)}"
                )
            try:
                resp = client.get(url)
                if resp.status_code == 200:
                    waited = time.monotonic() - start
                    logger.info("{} healthy at {} after {:.2f} s", dep.name, dep.endpoint.url, waited)
                    return waited
                last = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if time.monotonic() >= deadline:
                raise ServiceError(
                    f"{dep.name}: not healthy at {url} after {health.timeout_s:g} s (last: {last})\n"
                    f"--- last lines of {dep.log_path} ---\n{orch.logs(dep)}"
                )
            time.sleep(health.interval_s)


def probe(url: str, timeout_s: float = 5.0, require_ok: bool = False) -> str | None:
    """One check of an already running service; returns the problem, or None.

    By default any HTTP answer counts (a service without a health path is still reachable);
    ``require_ok`` asks for a 200, as a health check does.
    """
    try:
        with httpx.Client(timeout=timeout_s, trust_env=False, verify=tls_context()) as client:
            resp = client.get(url)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if require_ok and resp.status_code != 200:
        return f"HTTP {resp.status_code}"
    return None
