"""Protocols as plug-ins: one module per protocol family, each registered under the ``ubench.protocols``
entry-point group (``pyproject.toml``), found by name through ``get``. See docs/architecture.md for the
interface and a complete out-of-tree example."""

from __future__ import annotations

from ..recipes.registry import Part, ProtocolNotFound, find, names
from .base import BaseProtocol, Preparation, ProtocolPlugin, secret


def get(name: str) -> ProtocolPlugin:
    """The protocol a recipe names, with everything the run core calls."""
    proto = find(name)
    if not isinstance(proto, ProtocolPlugin):
        raise ProtocolNotFound(f"protocol {name!r} is registered, but has no 'plan' and 'preparation'")
    return proto


__all__ = ["BaseProtocol", "Part", "Preparation", "ProtocolNotFound", "ProtocolPlugin", "get", "names", "secret"]
