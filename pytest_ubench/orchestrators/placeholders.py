"""Recipe command templates: ``{port}``-style placeholders and ``${VAR}`` environment references.

Two renderings of one syntax: ``expand`` fills in values now (a local process), ``shell_word`` turns
a template into one safely quoted shell word whose dynamic parts are resolved when a batch job runs,
so a secret named as ``${HF_TOKEN}`` is read from the job's environment and never written into a
script.
"""

from __future__ import annotations

import os
import re
import shlex

from .base import MissingVariable, ServiceError

_PLACEHOLDER = re.compile(r"\$\{(\w+)\}|\{(\w+)\}")


def _unknown(template: str, name: str, known: dict[str, str]) -> ServiceError:
    return ServiceError(f"command argument {template!r}: unknown placeholder {{{name}}}; known: {sorted(known)}")


def expand(template: str, values: dict[str, str]) -> str:
    """Fill placeholders from ``values`` and ``${VAR}`` from the environment, in one pass.

    A substituted value is never re-expanded.
    """

    def sub(m: re.Match[str]) -> str:
        env_name, name = m.groups()
        if env_name is not None:
            if env_name not in os.environ:
                raise MissingVariable(f"command argument {template!r}: environment variable {env_name} is not set")
            return os.environ[env_name]
        if name not in values:
            raise _unknown(template, name, values)
        return values[name]

    return _PLACEHOLDER.sub(sub, template)


def shell_word(template: str, fragments: dict[str, str]) -> str:
    """One shell word: literal text single-quoted, placeholders replaced by trusted shell fragments.

    ``fragments`` maps a placeholder to shell code we generate ourselves (``"$port"``); nothing from the
    recipe is ever emitted unquoted, so ``; rm -rf ~`` in a recipe stays a literal argument.
    """
    parts: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        if m.start() > pos:
            parts.append(shlex.quote(template[pos : m.start()]))
        env_name, name = m.groups()
        if env_name is not None:
            parts.append(f'"${{{env_name}:?environment variable {env_name} is not set}}"')
        elif name in fragments:
            parts.append(fragments[name])
        else:
            raise _unknown(template, name, fragments)
        pos = m.end()
    if pos < len(template):
        parts.append(shlex.quote(template[pos:]))
    return "".join(parts) or "''"


def env_references(template: str) -> list[str]:
    """The ``${VAR}`` names a template reads, so a batch job can be refused before it is queued."""
    return [m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1) is not None]
