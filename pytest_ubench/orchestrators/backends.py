"""Orchestrators by name; one module per backend."""

from __future__ import annotations

from .base import Orchestrator
from .local import LocalOrchestrator

_BACKENDS = {"local": LocalOrchestrator}


def names() -> list[str]:
    return sorted(_BACKENDS)


def get_orchestrator(name: str) -> Orchestrator:
    try:
        return _BACKENDS[name]()
    except KeyError:
        raise ValueError(f"unknown orchestrator {name!r}; available: {', '.join(names())}") from None
