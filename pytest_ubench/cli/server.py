"""``ubenchai server start|list|status|logs|stop``: services left running between commands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..orchestrators import registry
from ..orchestrators.base import MissingVariable, ServiceError
from ..recipes import loader
from ..session import BenchmarkRun, RunOptions, manager
from . import entries
from .console import EXIT_OK, EXIT_TARGET, EXIT_USAGE, err, json_option, listing, tunnel_hint


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server = sub.add_parser("server", help="start, list, check and stop long-lived services")
    ssub = server.add_subparsers(dest="action", required=True)
    start = ssub.add_parser("start", help="start a recipe's service, wait until healthy, leave it running")
    entries.recipe_options(start)
    start.add_argument("--output", type=Path, metavar="DIR", help="logs and endpoint file (default: ubench-results/)")
    entries.placement_options(start, dry_run=True)
    json_option(ssub.add_parser("list", help="services started by 'server start' and their state"))
    for verb, text in (
        ("status", "state, health and log tail of a service (each replica's state)"),
        ("logs", "the last lines of a service's log"),
        ("stop", "stop a service"),
        ("scale", "run a service as N replicas: more started (each healthy), or the last ones stopped"),
        ("restart", "stop a service and start it again (as many replicas, same id)"),
    ):
        p = ssub.add_parser(verb, help=text)
        p.add_argument("service_id", metavar="ID", help="as 'ubenchai server list' shows it")
        if verb == "logs":
            p.add_argument("-n", "--lines", type=int, default=40, help="how many of the last lines (default 40)")
            p.add_argument("--replica", type=int, metavar="K", help="replica K's log (default: each one's last lines)")
        if verb == "status":
            json_option(p)
        if verb == "scale":
            p.add_argument("replicas", type=int, metavar="N", help="how many replicas to run")
        if verb in ("scale", "restart"):
            entries.placement_options(p)
    server.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.action == "start":
        return _start(args)
    if args.action == "list":
        rows = [(e.id, e.recipe, e.endpoint.url, entries.state_or_prune(e), e.started)
                for e in registry.all_entries("service")]  # fmt: skip
        listing(
            args.json,
            ("id", "recipe", "url", "state", "started"),
            rows,
            "no services started by 'ubenchai server start' (start one: ubenchai server start --recipe NAME)",
        )
        return EXIT_OK
    found = entries.find(args.service_id, "server")
    if found is None:
        return EXIT_USAGE
    entry = found
    if entry.elsewhere and args.action in ("stop", "status"):
        err(f"{entry.id} runs on {entry.elsewhere}: run 'ubenchai server {args.action} {entry.id}' there")
        return EXIT_USAGE
    if args.action == "stop":
        return entries.stop(entry)
    if args.action in ("scale", "restart"):
        return _change(entry, args)
    if args.action == "logs":
        try:
            print(manager.logs(entry, args.lines, args.replica), end="")
        except ServiceError as exc:
            err(str(exc))
            return EXIT_USAGE
        return EXIT_OK
    st = manager.status(entry)
    if args.json:
        print(
            json.dumps(
                {
                    "id": entry.id,
                    "recipe": entry.recipe,
                    "url": entry.endpoint.url,
                    "state": st.state.value,
                    "health": "ok" if st.health is None else st.health,
                    "started": entry.started,
                    "replicas": [
                        {"replica": m.index, "url": m.url, "state": m.state.value, "exit_code": m.exit_code}
                        for m in manager.members(entry)
                    ],
                },
                indent=2,
            )
        )
    else:
        print(f"{entry.id}: {st.state.value}, health {'ok' if st.health is None else st.health}, {entry.endpoint.url}")
        if len(entry.endpoint.urls) > 1:
            for m in manager.members(entry):
                code = f" (exit code {m.exit_code})" if m.exit_code is not None else ""
                print(f"  replica {m.index}: {m.state.value}{code}, {m.url}")
        print(manager.logs(entry, 20), end="")
    return EXIT_OK if st.state.value == "running" and st.health is None else EXIT_TARGET


def _change(entry: registry.Entry, args: argparse.Namespace) -> int:
    """``scale`` and ``restart``: the service's new endpoints, one per line; a replica that will not start
    names itself, and the service keeps the replicas it had."""
    if entry.elsewhere:
        err(f"{entry.id} runs on {entry.elsewhere}: run 'ubenchai server {args.action} {entry.id}' there")
        return EXIT_USAGE
    orch = entries.placement(args) if args.orchestrator or args.cluster else None
    try:
        changed = manager.scale(entry, args.replicas, orch) if args.action == "scale" else manager.restart(entry, orch)
    except ServiceError as exc:
        err(str(exc))
        return EXIT_USAGE if isinstance(exc, MissingVariable) else EXIT_TARGET
    for k, url in enumerate(changed.endpoint.urls):
        print(f"{changed.id} replica {k} {url}")
    return EXIT_OK


def _start(args: argparse.Namespace) -> int:
    root = args.output or Path("ubench-results")
    loaded = loader.load(args.recipe, args.overrides, settings=entries.settings(args))
    if args.dry_run:
        return dry_run(BenchmarkRun(RunOptions(output=root, orchestrator=args.orchestrator, cluster=args.cluster)),
                       loaded)  # fmt: skip
    try:
        entry = manager.start(loaded, root, entries.placement(args))
    except ServiceError as exc:
        err(str(exc))
        return EXIT_USAGE if isinstance(exc, MissingVariable) else EXIT_TARGET
    print(f"{entry.id} {entry.endpoint.url}")
    tunnel_hint(entry.endpoint, entry.recipe)
    return EXIT_OK


def dry_run(run: BenchmarkRun, loaded: loader.LoadedRecipe) -> int:
    """Print what deploying the recipe's service would run (``server start`` and ``client run``)."""
    try:
        text = run.dry_run(loaded)
    except ServiceError as exc:
        err(str(exc))
        return EXIT_USAGE
    if text is None:
        err(f"{loaded.recipe.name}: the recipe starts no service (it gives a url, or needs none); nothing would be "
            "deployed")  # fmt: skip
        return EXIT_USAGE
    print(text)
    return EXIT_OK
