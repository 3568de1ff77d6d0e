"""The protocol plug-in interface: everything the run core needs of a protocol, in one object.

A protocol module (one per protocol family, here or in another package) holds its recipe part (a
pydantic model), its planning (recipe case -> requests and how to read their responses, or an adapter
that makes each call through a client library, or a tool that generates the load itself), the
per-record figures its client fills (``items``, ``op``, ``nbytes``, ``recall``) and what its results
say was sent (the ``dataset`` part) and what its ``items_per_s`` counts (``rate_unit``). It registers an object
implementing ``ProtocolPlugin`` under the ``ubench.protocols`` entry-point group; ``BaseProtocol`` gives
the defaults, so a plain HTTP protocol needs only ``names`` and ``plan``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from ..load.planning import Planned
from ..orchestrators.base import Endpoint, MissingVariable
from ..recipes.registry import Part, RecipeProtocol
from ..recipes.sweep import Case


@dataclass(frozen=True)
class Preparation:
    """Work done once per deployment before any load (a vector collection built and its exact answers
    computed), timed as phases; cases whose preparation has the same ``key`` share it."""

    key: str
    run: Callable[[], dict[str, Any]]


@runtime_checkable
class ProtocolPlugin(RecipeProtocol, Protocol):
    """A protocol: what ``recipes.registry`` validates recipes with, and how a case becomes load."""

    rate_unit: str  # what items_per_s counts, as a rate (inputs/s, queries/s, IOPS)

    def plan(self, case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
        """The case's load against ``endpoint`` (None for a protocol that starts no service);
        ``duration_s`` replaces the workload's (a search probe)."""
        ...

    def preparation(self, case: Case, endpoint: Endpoint) -> Preparation | None:
        """Work before the load, or None."""
        ...


class BaseProtocol:
    """Defaults: no part of its own, does not stream or batch, talks to a service, no preparation."""

    names: tuple[str, ...] = ()
    part: Part | None = None
    streams = False
    batches = False
    needs_service = True
    rate_unit = "ops/s"

    def sweep_axes(self, part: BaseModel | None) -> dict[str, list[Any]]:
        return {}

    def plan(self, case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
        raise NotImplementedError

    def preparation(self, case: Case, endpoint: Endpoint) -> Preparation | None:
        return None


def secret(env: str | None, field: str) -> str | None:
    """The value of the variable a recipe field names (read when connecting, never stored); None when the
    field names none, an error naming the field when the variable is not set."""
    if env is None:
        return None
    value = os.environ.get(env)
    if value is None:
        raise MissingVariable(f"{field} names {env}, which is not set")
    return value
