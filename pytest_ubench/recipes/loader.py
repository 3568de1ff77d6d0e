"""Find, read, merge and validate recipe files; every error names file, line and field.

YAML is read with the safe loader only. The composed node tree is kept beside the data so a
validation error at ``workload.load.rate[1]`` can be traced back to its line in the file the user
edited (the override file first, when the value came from there).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from . import catalog
from .deployment import ClusterProfile
from .schema import MonitorRecipe, Recipe

M = TypeVar("M", bound=BaseModel)


class RecipeError(Exception):
    """A recipe that cannot be used; the message is one line per problem, ready for the user."""


@dataclass(frozen=True)
class LoadedRecipe:
    recipe: Recipe
    path: Path
    data: dict[str, Any]

    @property
    def sha256(self) -> str:
        blob = json.dumps(self.data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class _Source:
    where: str  # what an error names: a file (and a line in it follows), or a --set as typed
    data: Any
    node: yaml.Node | None
    lines: bool = True  # the node's line numbers mean something to the user (a file, not a --set)


@dataclass(frozen=True)
class Setting:
    """One ``--set PATH=VALUE`` (``--ubench-set`` under pytest): a value merged over the recipe and its
    override files, for the tweak that does not deserve a file. The value is YAML (``5`` a number,
    ``[1, 4]`` a list, ``'5'`` a string)."""

    label: str  # the option as typed, with its flag: what an error names
    data: dict[str, Any]


def setting(text: str, flag: str) -> Setting:
    """Parse one ``PATH=VALUE``; ``flag``: the option's name in the face the user typed it in."""
    label = f"{flag} {text}"
    path, eq, raw = text.partition("=")
    keys = path.strip().split(".")
    if not eq or not all(k.strip() == k and k for k in keys):
        raise RecipeError(f"{label}: expected PATH=VALUE with a dotted path, such as workload.duration_s=5")
    try:
        value: Any = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{label}: the value is not YAML: {getattr(exc, 'problem', None) or exc}") from None
    _bounded(label, value)
    for key in reversed(keys):
        value = {key: value}
    return Setting(label, value)


def search_path(extra: Iterable[Path] = ()) -> list[Path]:
    """Where recipe names are looked up: explicit dirs, ``UBENCHAI_CONFIG_DIR``, ./recipes."""
    dirs = list(extra)
    env = os.environ.get("UBENCHAI_CONFIG_DIR")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(Path.cwd() / "recipes")
    return dirs


def find(name_or_path: str, extra_dirs: Iterable[Path] = (), kind: catalog.Kind | None = "benchmark") -> Path:
    """The file a name or path stands for (see :mod:`.catalog`); ``kind`` None: a file of any kind."""
    try:
        return catalog.find(name_or_path, kind, search_path(extra_dirs))
    except catalog.NotFound as exc:
        raise RecipeError(str(exc)) from None


def available(extra_dirs: Iterable[Path] = ()) -> list[catalog.Entry]:
    """Every recipe file on the search path, subfolders included; earlier directories shadow later ones."""
    return catalog.entries(search_path(extra_dirs))


def _read(path: Path) -> _Source:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        at = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise RecipeError(f"{path}:{at}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x})") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{path}{line}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise RecipeError(f"{path}:1: a recipe must be a YAML mapping, got {type(data).__name__}")
    _bounded(str(path), data)
    return _Source(str(path), data, node)


MAX_VALUES = 100_000  # what a recipe's YAML may hold once its aliases are expanded


def _bounded(path: str, data: Any) -> None:
    """YAML aliases may repeat a value many times (a "billion laughs" in a free-form field like
    ``params``) or make it contain itself: both are refused here, before anything walks the data."""
    count = 0
    stack: list[tuple[Any, tuple[int, ...]]] = [(data, ())]
    while stack:
        value, inside = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise RecipeError(f"{path}: more than {MAX_VALUES:,} values once its YAML aliases are expanded")
        if isinstance(value, dict | list):
            if id(value) in inside:
                raise RecipeError(f"{path}: a YAML alias makes a value contain itself")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, (*inside, id(value))) for child in children)


def _node_at(node: yaml.Node | None, loc: tuple[int | str, ...]) -> tuple[yaml.Node | None, int]:
    """Walk the YAML node tree along a pydantic error location: the deepest node found and how many steps
    of ``loc`` it took (``len(loc)``: the value is written there; an unknown key points at the key itself)."""
    found = None
    for depth, key in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == key), None)
            if nxt is None:
                nxt = next((k for k, _ in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            nxt = node.value[key]
        else:
            nxt = None
        if nxt is None:
            return found, depth
        node = found = nxt
    return found, len(loc)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _is_branch_tag(part: int | str) -> bool:
    return isinstance(part, str) and (
        "[" in part
        or part.startswith(("constrained-", "function-"))
        or part in {"int", "float", "str", "bool"}
        or part[:1].isupper()  # a model branch (``Ramp``): recipe fields are lower case
    )


# Errors that only say "this union branch had the wrong type"; shown only when nothing better exists.
_TYPE_MISMATCH = {
    "list_type",
    "int_type",
    "int_parsing",
    "float_type",
    "float_parsing",
    "literal_error",
    "string_type",
    "bool_type",
    "bool_parsing",
    "dict_type",
    "model_type",
}


def _useful_errors(errors: list[Any]) -> list[tuple[tuple[int | str, ...], str]]:
    """Collapse pydantic's one-error-per-union-branch into what a user needs to read."""
    items = [(tuple(p for p in e["loc"] if not _is_branch_tag(p)), e) for e in errors]
    kept: dict[tuple[int | str, ...], list[str]] = {}
    for loc, err in items:
        if err["type"] in _TYPE_MISMATCH and any(
            other["type"] not in _TYPE_MISMATCH and oloc[: len(loc)] == loc for oloc, other in items
        ):
            continue
        kept.setdefault(loc, []).append(_message(err))
    return [(loc, " or ".join(dict.fromkeys(msgs))) for loc, msgs in kept.items()]


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    msg = msg[:1].lower() + msg[1:]
    if err["type"] not in ("missing", "value_error") and "input" in err:
        value = err["input"]
        if not isinstance(value, dict | list):
            msg += f", got {value!r}"
    return msg


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; anything else in ``over`` replaces the base value."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load(
    name_or_path: str | Path,
    overrides: Iterable[Path] = (),
    extra_dirs: Iterable[Path] = (),
    settings: Iterable[Setting] = (),
    target: str | None = None,
) -> LoadedRecipe:
    """A recipe with its override files merged over it in order, then each ``--set``; ``target``: a
    running service's URL, the service of a recipe that has none (the most common CI use: a recipe of
    workload and SLOs, pointed at whatever server the pipeline brought up)."""
    path = find(str(name_or_path), extra_dirs)
    sources, data = _merged(path, overrides, settings)
    if target is not None and data.get("service") is None:
        data["service"] = {"url": target}
    recipe = _validate(Recipe, sources, data)
    problems = recipe.cross_field_problems()
    if problems:
        raise RecipeError(_locate(sources, problems))
    return LoadedRecipe(recipe, path, data)


def load_monitor(name_or_path: str | Path, extra_dirs: Iterable[Path] = ()) -> MonitorRecipe:
    """A monitor recipe (``monitors/`` or ``kind: monitor``), by name or path."""
    return load_as(MonitorRecipe, find(str(name_or_path), extra_dirs, "monitor"))


def load_cluster(name_or_path: str | Path, extra_dirs: Iterable[Path] = ()) -> ClusterProfile:
    """A cluster profile (``clusters/`` or ``kind: cluster``), by name or path."""
    return load_as(ClusterProfile, find(str(name_or_path), extra_dirs, "cluster"))


SCHEMAS: dict[catalog.Kind, type[BaseModel]] = {
    "benchmark": Recipe,
    "cluster": ClusterProfile,
    "monitor": MonitorRecipe,
}


def load_as(model: type[M], path: Path) -> M:
    """A file validated by one schema, without the benchmark recipe's overrides and cross-field checks."""
    sources, data = _merged(path, ())
    return _validate(model, sources, data)


def kind_of(path: Path) -> catalog.Kind:
    """What a file on disk is: its ``kind:``, else what its folder (``clusters/``, ``monitors/``) says."""
    data = _read(path).data
    ref = "/".join(path.absolute().parts[-2:]) if path.parent.name in catalog.FOLDER_KINDS else path.name
    return catalog.kind_of(data, ref)


def _merged(
    path: Path, overrides: Iterable[Path], settings: Iterable[Setting] = ()
) -> tuple[list[_Source], dict[str, Any]]:
    sources = [_read(path)] + [_read(Path(o)) for o in overrides]
    sources += [_Source(s.label, s.data, yaml.compose(yaml.safe_dump(s.data)), lines=False) for s in settings]
    data: dict[str, Any] = {}
    for src in sources:
        data = merge(data, src.data)
    return sources, data


def _validate(model: type[M], sources: list[_Source], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = _useful_errors(exc.errors(include_url=False))
        raise RecipeError(_locate(sources, problems)) from None


def _locate(sources: list[_Source], problems: list[tuple[tuple[int | str, ...], str]]) -> str:
    """One line per problem: the file that set the value (the last override wins), its line, the field."""
    lines = []
    for loc, message in problems:
        where = sources[0].where
        exact = [s for s in sources if _node_at(s.node, loc)[1] == len(loc)]  # files that set the value
        for src in reversed(exact or sources):
            node = _node_at(src.node, loc)[0]
            if node is not None and (src is sources[0] or _node_at(src.node, loc[:1])[0] is not None):
                where = f"{src.where}:{node.start_mark.line + 1}" if src.lines else src.where
                break
        lines.append(f"{where}: {_format_loc(loc)}: {message}")
    return "\n".join(dict.fromkeys(lines))
