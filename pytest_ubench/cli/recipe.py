"""``ubenchai recipe list|validate``: the recipes on the search path, and whether they load."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..orchestrators import keys
from ..orchestrators.placeholders import env_references
from ..recipes import catalog, loader
from ..recipes.schema import Recipe
from ..recipes.sweep import expand
from . import entries
from .console import EXIT_OK, EXIT_USAGE, err, json_option, listing


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    recipe = sub.add_parser("recipe", help="list and validate recipes")
    rsub = recipe.add_subparsers(dest="action", required=True)
    json_option(
        rsub.add_parser(
            "list",
            help="recipes, cluster profiles and monitors on the search path (UBENCHAI_CONFIG_DIR, ./recipes)",
        )
    )
    validate = rsub.add_parser(
        "validate", help="check recipe files, cluster profiles and monitor recipes, each by its own schema"
    )
    validate.add_argument("paths", nargs="+", metavar="PATH", help="files, or names on the search path")
    entries.recipe_options(validate, recipe=False)
    recipe.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    return _list(args.json) if args.action == "list" else _validate(args.paths, args.overrides, entries.settings(args))


def _list(as_json: bool) -> int:
    rows: list[tuple[str, ...]] = []
    for entry in loader.available():
        protocol = mode = ""
        try:
            if entry.kind == "benchmark":
                r = loader.load(entry.path).recipe
                protocol, mode = r.workload.protocol, r.workload.load.mode
            else:
                loader.load_as(loader.SCHEMAS[entry.kind], entry.path)
        except loader.RecipeError:
            protocol = "invalid"
        rows.append((entry.folder, entry.ref, entry.name or entry.stem, entry.kind, protocol, mode, str(entry.path)))
    where = ", ".join(str(d) for d in loader.search_path())
    listing(as_json, ("folder", "ref", "name", "kind", "protocol", "load", "file"), rows,
            f"no recipes in {where} (set UBENCHAI_CONFIG_DIR)")  # fmt: skip
    return EXIT_OK


def _validate(paths: list[str], overrides: list[Path], settings: list[loader.Setting]) -> int:
    """Each file against its own schema: benchmark recipes (with overrides and --set, and their cases),
    cluster profiles and monitor recipes."""
    bad = 0
    for p in paths:
        try:
            path = loader.find(p, kind=None)
            kind = loader.kind_of(path)
            if kind != "benchmark":
                loader.load_as(loader.SCHEMAS[kind], path)
                print(f"{p}: ok ({catalog.WHAT[kind]})")
                continue
            loaded = loader.load(path, overrides, settings=settings)
            cases = expand(loaded)
            print(f"{p}: ok ({len(cases)} case{'s' if len(cases) != 1 else ''})")
        except (loader.RecipeError, ValueError) as exc:
            bad += 1
            err(str(exc))
            continue
        spec = loaded.recipe.service
        if spec is not None and keys.unguarded(spec):
            print(f"warning: {p}: service.host {spec.host or '*'}: listens beyond loopback without a per-deployment "
                  "key, so anyone who reaches the node can use it; name the variable its server reads a key from in "
                  "service.api_key_env", file=sys.stderr)  # fmt: skip
        for where, name in secrets_in_argv(loaded.recipe):
            print(f"warning: {p}: {where}: ${{{name}}} puts a secret in the service's command line, which every "
                  f"user of the node can read (ps); pass it in service.env", file=sys.stderr)  # fmt: skip
    return EXIT_USAGE if bad else EXIT_OK


def secrets_in_argv(recipe: Recipe) -> list[tuple[str, str]]:
    """``${VAR}`` references in the service's command whose name looks like a secret's."""
    spec = recipe.service
    if spec is None or spec.command is None:
        return []
    return [(f"service.command[{i}]", name) for i, word in enumerate(spec.command)
            for name in env_references(word) if any(w in name.upper() for w in keys.SECRET_WORDS)]  # fmt: skip
