"""Orchestrators by name; one module per backend."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ..recipes import loader
from ..recipes.deployment import ClusterProfile
from .base import Orchestrator
from .local import LocalOrchestrator
from .replicas import Replicated
from .slurm import SlurmOrchestrator

_BACKENDS: dict[str, Callable[[ClusterProfile | None], Orchestrator]] = {
    "local": lambda profile: LocalOrchestrator(),
    "slurm": lambda profile: SlurmOrchestrator(profile),
}


def names() -> list[str]:
    return sorted(_BACKENDS)


def get_orchestrator(name: str, profile: ClusterProfile | None = None) -> Replicated:
    """The backend, able to deploy a service as several replicas."""
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown orchestrator {name!r}; available: {', '.join(names())}") from None
    return Replicated(factory(profile))


def placement(
    orchestrator: str | None, cluster: str | None, extra_dirs: Iterable[Path] = (), queue_timeout_s: float | None = None
) -> Replicated:
    """Where services go: the explicit choice wins, then the cluster profile's, then local processes;
    ``queue_timeout_s`` (an option) over the profile's."""
    profile = loader.load_cluster(cluster, extra_dirs) if cluster else None
    if queue_timeout_s is not None:
        if queue_timeout_s <= 0:
            raise ValueError(f"queue timeout: {queue_timeout_s:g} s is not a time to wait (more than 0)")
        profile = (profile or ClusterProfile(name="default")).model_copy(update={"queue_timeout_s": queue_timeout_s})
    return get_orchestrator(orchestrator or (profile.orchestrator if profile else "local"), profile)
