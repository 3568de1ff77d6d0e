"""``ubenchai image pull``: the container images of recipes pulled ahead of a run, on the login node."""

from __future__ import annotations

import argparse

from ..orchestrators.base import ServiceError
from ..session import BenchmarkRun, RunOptions
from . import entries
from .console import EXIT_OK, EXIT_TARGET, err


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    image = sub.add_parser("image", help="container images of recipes")
    isub = image.add_subparsers(dest="action", required=True)
    pull = isub.add_parser(
        "pull",
        help="pull the images of recipes into the image cache now (a cluster profile's: on shared scratch), so "
        "jobs on compute nodes without a network find them",
    )
    pull.add_argument("recipes", nargs="+", metavar="RECIPE", help="names on the search path, or files")
    entries.recipe_options(pull, recipe=False)
    entries.placement_options(pull)
    image.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    run = BenchmarkRun(RunOptions(recipes=args.recipes, overrides=args.overrides, settings=entries.settings(args),
                                  orchestrator=args.orchestrator, cluster=args.cluster))  # fmt: skip
    if not run.images():
        print("no container images: these recipes run their services as plain processes")
        return EXIT_OK
    try:
        for line in run.preflight(pull=True):
            print(line, flush=True)
    except ServiceError as exc:
        err(str(exc))
        return EXIT_TARGET
    return EXIT_OK
