"""Protocols spoken through their ecosystem's client library, one module each (``engine.Adapter``)."""

from __future__ import annotations

import os

from ...orchestrators.base import ServiceError


def secret(env: str | None, field: str) -> str | None:
    """The value of the variable a recipe field names (read when connecting, never stored); None when the
    field names none, an error naming the field when the variable is not set."""
    if env is None:
        return None
    value = os.environ.get(env)
    if value is None:
        raise ServiceError(f"{field} names {env}, which is not set")
    return value
