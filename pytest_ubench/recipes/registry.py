"""The protocols a recipe may name, found through the ``ubench.protocols`` entry-point group.

pytest-ubench registers its own protocols in that group too, so built-in and third-party protocols are
found the same way and the core names none of them. This module knows only what the recipe layer needs
of a protocol (its names, its part of the workload, what it accepts); the rest of the interface (plan,
prepare) is :class:`pytest_ubench.protocols.base.ProtocolPlugin`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

GROUP = "ubench.protocols"


@dataclass(frozen=True)
class Part:
    """A protocol's own part of the workload: ``workload.<key>``, validated by ``model``; a part that
    is not ``required`` is filled with the model's defaults when the recipe leaves it out."""

    key: str
    model: type[BaseModel]
    required: bool = True


@runtime_checkable
class RecipeProtocol(Protocol):
    """What a recipe's validation asks of a protocol."""

    names: tuple[str, ...]  # the values of ``workload.protocol`` it serves
    part: Part | None
    streams: bool  # may be asked to stream (``stream: true``)
    batches: bool  # takes several inputs per request (``batch_size``)
    needs_service: bool  # talks to a service (else: the recipe has no ``service`` part)

    def sweep_axes(self, part: BaseModel | None) -> dict[str, list[Any]]:
        """Sweep axes a protocol's part adds to the load's (a list of search parameters)."""
        ...


class ProtocolNotFound(ValueError):
    """A recipe names a protocol that no installed package registers."""


@dataclass(frozen=True)
class _Table:
    by_name: dict[str, RecipeProtocol]
    sources: dict[str, str]  # protocol name -> entry point that registered it
    broken: dict[str, str]  # entry point -> why it could not be loaded


@functools.cache
def _table() -> _Table:
    by_name: dict[str, RecipeProtocol] = {}
    sources: dict[str, str] = {}
    broken: dict[str, str] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        where = f"{ep.name} = {ep.value}"
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party package must not break the others
            broken[where] = f"{type(exc).__name__}: {exc}"
            continue
        if not isinstance(obj, RecipeProtocol):
            broken[where] = "not a protocol (needs names, part, streams, batches, needs_service, sweep_axes)"
            continue
        for name in obj.names:
            if name in by_name and by_name[name] is not obj:
                broken[where] = f"protocol {name!r} is already registered by {sources[name]}"
                continue
            by_name[name], sources[name] = obj, where
    return _Table(by_name, sources, broken)


def names() -> list[str]:
    return sorted(_table().by_name)


def find(name: str) -> RecipeProtocol:
    table = _table()
    try:
        return table.by_name[name]
    except KeyError:
        known = ", ".join(sorted(table.by_name)) or f"none (is pytest-ubench installed? see the {GROUP} entry points)"
        broken = "".join(f"; not loaded: {ep}: {why}" for ep, why in table.broken.items())
        raise ProtocolNotFound(f"unknown protocol {name!r}; known: {known}{broken}") from None


def part_owners() -> dict[str, list[str]]:
    """Each part key and the protocols it belongs to."""
    owners: dict[str, list[str]] = {}
    for name, proto in sorted(_table().by_name.items()):
        if proto.part is not None:
            owners.setdefault(proto.part.key, []).append(name)
    return owners
