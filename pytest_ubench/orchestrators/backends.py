"""Orchestrators by name; one module per backend."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ..recipes import loader
from ..recipes.deployment import ClusterProfile
from .base import Orchestrator
from .local import LocalOrchestrator
from .slurm import SlurmOrchestrator

_BACKENDS: dict[str, Callable[[ClusterProfile | None], Orchestrator]] = {
    "local": lambda profile: LocalOrchestrator(),
    "slurm": lambda profile: SlurmOrchestrator(profile),
}


def names() -> list[str]:
    return sorted(_BACKENDS)


def get_orchestrator(name: str, profile: ClusterProfile | None = None) -> Orchestrator:
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown orchestrator {name!r}; available: {', '.join(names())}") from None
    return factory(profile)


def placement(orchestrator: str | None, cluster: str | None, extra_dirs: Iterable[Path] = ()) -> Orchestrator:
    """Where services go: the explicit choice wins, then the cluster profile's, then local processes."""
    profile = loader.load_cluster(cluster, extra_dirs) if cluster else None
    return get_orchestrator(orchestrator or (profile.orchestrator if profile else "local"), profile)
