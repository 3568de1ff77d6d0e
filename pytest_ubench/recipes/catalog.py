"""Where recipe files are and how a name a user typed finds one.

Users type recipes the way they see them: a path, a file stem (``llm-inference``), the ``name:`` inside
(``vllm-meluxina``) or ``folder/stem`` (``meluxina/vllm``). Every directory of the search path is walked,
subfolders included. Three kinds of file live there, each with its own schema: benchmark recipes, cluster
profiles and monitor recipes; a file says which with ``kind:``, else its folder does (``clusters/``,
``monitors/``), else it is a benchmark recipe.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, get_args

import yaml

Kind = Literal["benchmark", "cluster", "monitor"]
KINDS: tuple[Kind, ...] = get_args(Kind)
FOLDER_KINDS: dict[str, Kind] = {"clusters": "cluster", "monitors": "monitor"}
SUFFIXES = (".yaml", ".yml")
WHAT: dict[Kind, str] = {"benchmark": "recipe", "cluster": "cluster profile", "monitor": "monitor recipe"}


class NotFound(LookupError):
    """No file (or more than one) answers to a name; the message says where it looked and what is near."""


@dataclass(frozen=True)
class Entry:
    """One file on the search path."""

    path: Path
    ref: str  # folder/stem below its search directory, with '/' whatever the OS: what a user may type
    kind: Kind
    name: str | None  # the file's ``name:``; None when the file cannot be read as a mapping

    @property
    def folder(self) -> str:
        return self.ref.rpartition("/")[0] or "."

    @property
    def stem(self) -> str:
        return self.path.stem


def kind_of(data: object, ref: str) -> Kind:
    """The kind a file declares (``kind:``), else the one its top folder implies."""
    declared = data.get("kind") if isinstance(data, dict) else None
    if declared in KINDS:
        return cast(Kind, declared)
    return FOLDER_KINDS.get(ref.partition("/")[0] if "/" in ref else "", "benchmark")


def _entry(path: Path, root: Path) -> Entry:
    ref = path.relative_to(root).with_suffix("").as_posix()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None  # still listed (as what its folder says); loading it names the problem
    name = data.get("name") if isinstance(data, dict) else None
    return Entry(path, ref, kind_of(data, ref), name if isinstance(name, str) else None)


def entries(dirs: Iterable[Path]) -> list[Entry]:
    """Every recipe file below ``dirs``, sorted by folder; an earlier directory shadows a later one's file
    of the same ``folder/stem``."""
    seen: dict[str, Entry] = {}
    for root in dirs:
        if not root.is_dir():
            continue
        for here, subdirs, files in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith((".", "_")))
            for f in sorted(files):
                path = Path(here) / f
                if path.suffix in SUFFIXES and not f.startswith("."):
                    entry = _entry(path, root)
                    seen.setdefault(entry.ref, entry)
    return sorted(seen.values(), key=lambda e: (e.folder != ".", e.folder, e.ref))


def find(text: str, kind: Kind | None, dirs: list[Path]) -> Path:
    """The file ``text`` names: a path (or one below a directory of ``dirs``), else on ``dirs`` by
    ``folder/stem``, by stem or by ``name:``; among files of ``kind`` (None: of any kind)."""
    typed = Path(text)
    if typed.is_file():
        return typed
    if typed.suffix in SUFFIXES:
        below = next((d / typed for d in dirs if not typed.is_absolute() and (d / typed).is_file()), None)
        if below is None:
            raise NotFound(f"{text}: {WHAT[kind or 'benchmark']} file not found")
        return below
    ref = text.replace(os.sep, "/").strip("/")
    what = WHAT[kind] if kind else "recipe, cluster profile or monitor"
    mine = [e for e in entries(dirs) if kind in (None, e.kind)]
    for matches in (
        [e for e in mine if e.ref == ref],
        [e for e in mine if e.stem == ref],
        [e for e in mine if e.name == ref],
    ):
        if len(matches) == 1:
            return matches[0].path
        if matches:
            refs = ", ".join(e.ref for e in matches)
            raise NotFound(f"{what} {text!r} is ambiguous: {refs}; give folder/name or a path")
    where = ", ".join(str(d) for d in dirs) or "no directory"
    known = sorted({e.ref for e in mine} | {e.name for e in mine if e.name})
    near = difflib.get_close_matches(ref, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(near)}?" if near else " (set UBENCHAI_CONFIG_DIR or give a path)"
    raise NotFound(f"{what} {text!r} not found in {where}{hint}")
