"""The orchestrator contract: deploy a service, report its state and logs, stop it.

Every backend (local processes now, Slurm next) writes the same endpoint file into the run
directory, so the load engine and later tools only ever read that file to find a service.
"""

from __future__ import annotations

import json
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..metrics.files import write_json
from ..recipes.deployment import Resources, ServiceSpec


def tls_context() -> ssl.SSLContext:
    """One TLS policy for load and control-plane calls: the system CA store (or SSL_CERT_FILE)."""
    return ssl.create_default_context()


class ServiceError(Exception):
    """A service that could not be started, became unhealthy, or could not be reached."""


def address(url: str) -> tuple[str, int]:
    """Host and port of a service's URL (the scheme's port where it names none)."""
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ServiceError(f"{url}: no host to send requests to")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


class MissingVariable(ServiceError):
    """A recipe reads an environment variable that is not set (or cannot be sent): a usage problem
    (CLI exit 2), found before anything is started where it can be."""


class ServiceState(StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    url: str
    pid: int | None = None
    job_id: str | None = None
    node: str | None = None  # the host name the service runs on
    slurm_node: str | None = None  # its Slurm node name (differs where several slurmd share a host)
    key_file: str | None = None  # where the service's per-deployment API key is (orchestrators.keys)
    # Every replica's URL, replica 0's first, when the service runs as several (orchestrators/replicas.py);
    # empty for one instance, whose URL is ``url``.
    replicas: tuple[str, ...] = ()
    balanced: bool = False  # ``url`` is a load balancer's in front of the replicas (orchestrators/front.py)

    @property
    def urls(self) -> tuple[str, ...]:
        """Where the service answers: each replica's URL, or the one."""
        return self.replicas or (self.url,)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Host and port of each replica (or of the one service)."""
        return [address(url) for url in self.urls]

    @property
    def load_urls(self) -> tuple[str, ...]:
        """Where the load clients send: the balancer, else each replica (the clients spread the load)."""
        return (self.url,) if self.balanced else self.urls

    @property
    def tls(self) -> bool:
        return self.url.startswith("https:")

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> Endpoint:
        return cls.of(json.loads(path.read_text(encoding="utf-8")))

    @classmethod
    def of(cls, data: dict[str, Any]) -> Endpoint:
        """From its JSON form (``asdict``), where the replicas' tuple became a list."""
        return cls(**(data | {"replicas": tuple(data.get("replicas", ()))}))


@dataclass
class Deployment:
    """A deployed (or attached) service; ``handle`` is backend-private."""

    name: str
    endpoint: Endpoint
    run_dir: Path
    log_path: Path | None
    command: list[str] | None
    handle: Any = field(default=None, repr=False)
    exit_code: int | None = None
    detail: str = ""  # what the backend knows beyond the exit code, e.g. "job 12 FAILED (NonZeroExitCode)"


def to_record(orch: Orchestrator, dep: Deployment) -> dict[str, Any]:
    """A deployment as JSON-able data another process can rebuild it from (``from_record``)."""
    return {
        "endpoint": asdict(dep.endpoint),
        "run_dir": str(dep.run_dir),
        "log_path": str(dep.log_path) if dep.log_path else None,
        "command": dep.command,
        "handle": orch.describe(dep),
    }


def from_record(orch: Orchestrator, name: str, data: dict[str, Any]) -> Deployment:
    log = Path(data["log_path"]) if data["log_path"] else None
    dep = Deployment(name, Endpoint.of(data["endpoint"]), Path(data["run_dir"]), log, data["command"])
    return orch.attach(dep, data["handle"])


def tail(path: Path | None, lines: int = 40) -> str:
    """The last lines of a service's log, whichever backend wrote it."""
    if path is None or not path.exists():
        return ""
    with path.open(encoding="utf-8", errors="replace") as fh:
        return "".join(deque(fh, maxlen=lines))


class Orchestrator(Protocol):
    name: str
    # Deployments run on other nodes, in allocations of their own (Slurm), not on this machine: monitoring
    # exporters then run inside the service's deployment (``ServiceSpec.sidecars``: the node and GPUs are
    # its allocation's), and Prometheus listens beyond loopback, where this host can query it.
    remote: bool

    def dry_run(self, spec: ServiceSpec, name: str, run_dir: Path) -> str:
        """What ``deploy`` would run (a command line, a batch script), without running it."""
        ...

    def deploy(self, spec: ServiceSpec, name: str, run_dir: Path, detach: bool = False) -> Deployment:
        """Start the service; ``detach`` lets it outlive this process (``ubenchai server start``)."""
        ...

    def placeholders(self) -> dict[str, str]:
        """The site's values recipes may name: ``{scratch}`` (a filesystem the nodes share, for big files
        that outlive a run) and, on clusters with project ids in their paths, ``{project}``."""
        ...

    def monitor_image(self, name: str) -> str | None:
        """The image to run a monitoring part from (``prometheus``, ``node_exporter``) where the placement's
        nodes have no such binary (a cluster profile's ``monitor_images``); None: the binary on PATH."""
        ...

    def pull(self, image: str) -> Path:
        """The image's ``.sif`` in this placement's image cache (a cluster's: on a filesystem its nodes
        share), pulled here and now unless it is there already."""
        ...

    def describe(self, dep: Deployment) -> dict[str, Any]:
        """JSON-able data that lets a later process find the service again (see ``attach``)."""
        ...

    def attach(self, dep: Deployment, data: dict[str, Any]) -> Deployment:
        """Give a deployment rebuilt from the registry its backend handle."""
        ...

    def status(self, dep: Deployment) -> ServiceState: ...

    def logs(self, dep: Deployment, lines: int = 40) -> str: ...

    def stop(self, dep: Deployment) -> None: ...

    def run_tasks(
        self,
        what: str,
        job_name: str,
        resources: Resources,
        command: list[str],
        out_dir: Path,
        on_running: Callable[[float], None] | None = None,
    ) -> None:
        """Run ``command`` as ``resources.nodes`` x ``tasks_per_node`` tasks (``SLURM_PROCID`` and
        ``SLURM_NTASKS`` set in each) to completion (load clients, fio); ``on_running`` is given the seconds
        since they started, per poll. Ctrl-C or any error stops them before re-raising."""
        ...
