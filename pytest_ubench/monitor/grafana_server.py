"""Grafana for a monitor, started from its image through the monitor's orchestrator (a Slurm job on a
cluster), provisioned with the monitor's datasource and dashboard.

The admin password is generated per run and handed over as a file (Grafana's ``__FILE`` variables):
it is in no environment, command line, batch script or log; the user reads it from the file (mode 0600).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..metrics import server_queries as queries
from ..orchestrators.base import Deployment, Orchestrator
from ..orchestrators.health import deploy_healthy
from ..recipes.deployment import Container, HealthCheck, ServiceSpec
from ..recipes.schema import GrafanaServer
from . import grafana


@dataclass(frozen=True)
class Grafana:
    deployment: Deployment
    password_file: Path
    user: str = "admin"

    @classmethod
    def start(
        cls,
        orch: Orchestrator,
        root: Path,
        options: GrafanaServer,
        prometheus_url: str,
        query_sets: list[str],
        own: dict[str, str],
        job: str,
        title: str,
    ) -> Grafana:
        """Provision (datasource + dashboard of the monitor's queries), then start Grafana and wait until
        healthy."""
        root = root.absolute()
        named = queries.named(query_sets, own, job)
        dash = grafana.dashboard(f"ubench {title}", f"ubench-{title}"[:40], {title: named})
        grafana.write_provisioning(root, prometheus_url, dash)
        run_dir = root / "grafana-server"
        password_file = run_dir / "admin-password"
        write_password(password_file)
        service = spec(options, root / "grafana" / "provisioning", password_file)
        return cls(deploy_healthy(orch, service, "grafana", run_dir, detach=True), password_file)


def write_password(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(18))


def spec(options: GrafanaServer, provisioning: Path, password_file: Path) -> ServiceSpec:
    return ServiceSpec(
        runtime="apptainer",
        container=Container(image=options.image, binds=[str(provisioning.parent), str(password_file.parent)]),
        command=list(options.command),
        host=options.host,
        env={
            "GF_SERVER_HTTP_ADDR": "{host}",
            "GF_SERVER_HTTP_PORT": "{port}",
            "GF_PATHS_DATA": "{run_dir}/data",
            "GF_PATHS_LOGS": "{run_dir}/logs",
            "GF_PATHS_PROVISIONING": str(provisioning),
            "GF_SECURITY_ADMIN_USER": "admin",
            "GF_SECURITY_ADMIN_PASSWORD__FILE": str(password_file),
            "GF_AUTH_ANONYMOUS_ENABLED": "false",
            "GF_ANALYTICS_REPORTING_ENABLED": "false",
            "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
        },
        health=HealthCheck(path="/api/health", timeout_s=180.0),
    )
