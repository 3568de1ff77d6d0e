"""Services started by ``ubenchai server start`` and still running, kept across commands.

One JSON file per service under the state directory (``UBENCHAI_STATE_DIR``, default
``~/.local/state/ubenchai``), written atomically: concurrent commands never share a file, so no
lock is needed, and a crashed command leaves either a whole entry or none.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..metrics.files import write_json
from .base import Deployment, Endpoint


def state_dir() -> Path:
    env = os.environ.get("UBENCHAI_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ubenchai"


@dataclass(frozen=True)
class Entry:
    id: str
    recipe: str
    orchestrator: str
    endpoint: Endpoint
    run_dir: str
    log_path: str | None
    command: list[str] | None
    handle: dict[str, Any]  # backend data to find the service again (pid + start time, job id)
    started: str
    health_path: str = "/health"
    kind: str = "service"  # or "monitor" (a Prometheus started by 'ubenchai monitor start')
    metrics_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific (a monitor's queries, interval)
    # The host that started it: a process (local orchestrator, a client run) can only be checked, and
    # pruned, from there; $HOME (and so this registry) may be shared by several login nodes.
    host: str = field(default_factory=socket.gethostname)

    @property
    def elsewhere(self) -> str | None:
        """The other host a process entry runs on, or None when it can be checked from here."""
        local_process = self.orchestrator == "local" or self.kind == "client"
        return self.host if local_process and self.host != socket.gethostname() else None

    def deployment(self) -> Deployment:
        return Deployment(
            self.recipe, self.endpoint, Path(self.run_dir), Path(self.log_path) if self.log_path else None, self.command
        )


def new_id(recipe: str) -> str:
    return f"{recipe}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _dir() -> Path:
    return state_dir() / "services"


def save(entry: Entry) -> None:
    write_json(_dir() / f"{entry.id}.json", asdict(entry))


def get(service_id: str) -> Entry:
    path = _dir() / f"{service_id}.json"
    if not path.is_file():
        raise KeyError(service_id)
    return _entry(json.loads(path.read_text(encoding="utf-8")))


def _entry(data: dict[str, Any]) -> Entry:
    data["endpoint"] = Endpoint.of(data["endpoint"])
    return Entry(**data)


def all_entries(kind: str | None = None) -> list[Entry]:
    d = _dir()
    if not d.is_dir():
        return []
    entries = []
    for path in sorted(d.glob("*.json")):
        try:
            entries.append(_entry(json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, TypeError, KeyError):
            continue  # a foreign or damaged file is not a service
    return [e for e in entries if kind is None or e.kind == kind]


def remove(service_id: str) -> None:
    (_dir() / f"{service_id}.json").unlink(missing_ok=True)
