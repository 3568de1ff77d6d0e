"""``ubenchai recipe list|validate``: the recipes on the search path, and whether they load."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.table import Table

from ..orchestrators.placeholders import env_references
from ..recipes import loader
from ..recipes.schema import Recipe
from ..recipes.sweep import expand
from .console import EXIT_OK, EXIT_USAGE, err, out


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    recipe = sub.add_parser("recipe", help="list and validate recipes")
    rsub = recipe.add_subparsers(dest="action", required=True)
    rsub.add_parser("list", help="recipes on the search path (UBENCHAI_CONFIG_DIR, ./recipes)")
    validate = rsub.add_parser("validate", help="check recipe files; one line per problem")
    validate.add_argument("paths", nargs="+", metavar="PATH")
    validate.add_argument("--overrides", action="append", default=[], type=Path, metavar="FILE")
    recipe.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    return _list() if args.action == "list" else _validate(args.paths, args.overrides)


def _list() -> int:
    table = Table("name", "protocol", "load", "file")
    for path in loader.available():
        try:
            r = loader.load(path).recipe
            table.add_row(r.name, r.workload.protocol, r.workload.load.mode, str(path))
        except loader.RecipeError:
            table.add_row(path.stem, "[red]invalid[/red]", "", str(path))
    out.print(table)
    return EXIT_OK


def _validate(paths: list[str], overrides: list[Path]) -> int:
    bad = 0
    for p in paths:
        try:
            loaded = loader.load(p, overrides)
            cases = expand(loaded)
            print(f"{p}: ok ({len(cases)} case{'s' if len(cases) != 1 else ''})")
        except (loader.RecipeError, ValueError) as exc:
            bad += 1
            err(str(exc))
            continue
        for where, name in secrets_in_argv(loaded.recipe):
            print(f"warning: {p}: {where}: ${{{name}}} puts a secret in the service's command line, which every "
                  f"user of the node can read (ps); pass it in service.env", file=sys.stderr)  # fmt: skip
    return EXIT_USAGE if bad else EXIT_OK


SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASS", "CREDENTIAL", "AUTH")


def secrets_in_argv(recipe: Recipe) -> list[tuple[str, str]]:
    """``${VAR}`` references in the service's command whose name looks like a secret's."""
    spec = recipe.service
    if spec is None or spec.command is None:
        return []
    return [(f"service.command[{i}]", name) for i, word in enumerate(spec.command)
            for name in env_references(word) if any(w in name.upper() for w in SECRET_WORDS)]  # fmt: skip
