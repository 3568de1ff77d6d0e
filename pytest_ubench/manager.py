"""Long-lived services for ``ubenchai server start|list|status|stop``.

A benchmark session deploys and tears down its own services (``session.Services``); these commands
instead leave a service running between commands, e.g. to point several ``client run --target``
at it. Each one is recorded in the registry so a later command can find, check and stop it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .orchestrators import registry
from .orchestrators.backends import get_orchestrator
from .orchestrators.base import ServiceState
from .orchestrators.health import probe
from .recipes.loader import LoadedRecipe
from .session import deploy


@dataclass(frozen=True)
class Status:
    entry: registry.Entry
    state: ServiceState
    health: str | None  # None when the health check answered, else the problem


def start(loaded: LoadedRecipe, root: Path, orchestrator: str = "local") -> registry.Entry:
    if loaded.recipe.service.command is None:
        raise ValueError(f"{loaded.recipe.name}: the recipe gives a url, not a command: nothing to start")
    orch = get_orchestrator(orchestrator)
    service_id = registry.new_id(loaded.recipe.name)
    dep = deploy(orch, loaded.recipe.service, loaded.recipe.name, root / "services" / service_id, detach=True)
    entry = registry.Entry(
        id=service_id,
        recipe=loaded.recipe.name,
        orchestrator=orchestrator,
        endpoint=dep.endpoint,
        run_dir=str(dep.run_dir),
        log_path=str(dep.log_path) if dep.log_path else None,
        command=dep.command,
        handle=orch.describe(dep),
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        health_path=loaded.recipe.service.health.path,
    )
    try:
        registry.save(entry)
    except BaseException:
        orch.stop(dep)  # a service nobody can find again must not be left running
        raise
    return entry


def status(entry: registry.Entry) -> Status:
    orch = get_orchestrator(entry.orchestrator)
    dep = orch.attach(entry.deployment(), entry.handle)
    state = orch.status(dep)
    health = (
        probe(entry.endpoint.url + entry.health_path, 5.0, require_ok=True)
        if state == ServiceState.RUNNING
        else state.value
    )
    return Status(entry, state, health)


def stop(service_id: str) -> registry.Entry:
    entry = registry.load(service_id)
    orch = get_orchestrator(entry.orchestrator)
    orch.stop(orch.attach(entry.deployment(), entry.handle))
    registry.remove(service_id)
    return entry


def logs(entry: registry.Entry, lines: int = 40) -> str:
    orch = get_orchestrator(entry.orchestrator)
    return orch.logs(orch.attach(entry.deployment(), entry.handle), lines)
