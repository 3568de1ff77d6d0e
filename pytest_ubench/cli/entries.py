"""What the long-lived commands (server, monitor, client) share: where things are placed, and the registry
entries of things left running (found by id, listed with their state, stopped)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..orchestrators import backends, registry
from ..orchestrators.base import ServiceState
from ..orchestrators.replicas import Replicated
from ..recipes import loader
from ..session import manager
from .console import EXIT_OK, err


def recipe_options(p: argparse.ArgumentParser, recipe: bool = True) -> None:
    """How a recipe is named and tweaked, spelled alike in every command (and like the pytest options)."""
    if recipe:
        p.add_argument("--recipe", required=True, metavar="NAME|PATH", help="a recipe's name on the search path "
                       "(UBENCHAI_CONFIG_DIR, ./recipes) or its file")  # fmt: skip
    p.add_argument("--override", dest="overrides", action="append", default=[], type=Path, metavar="FILE",
                   help="YAML merged over the recipe (repeatable, later wins)")  # fmt: skip
    p.add_argument("--overrides", dest="overrides", action="append", type=Path, help=argparse.SUPPRESS)  # old name
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="PATH=VALUE",
                   help="one value merged over the recipe and override files, e.g. workload.duration_s=5 "
                   "(repeatable; the value is YAML)")  # fmt: skip


def settings(args: argparse.Namespace) -> list[loader.Setting]:
    return [loader.setting(text, "--set") for text in args.settings]


def placement_options(p: argparse.ArgumentParser, dry_run: bool = False) -> None:
    p.add_argument("--orchestrator", choices=backends.names(), help="default: the cluster profile's, else local")
    p.add_argument(
        "--cluster", metavar="NAME|PATH", help="cluster profile (recipes/clusters/): account, partition, modules, binds"
    )
    p.add_argument("--config", dest="cluster", help=argparse.SUPPRESS)  # its old name
    p.add_argument("--queue-timeout", type=float, metavar="SECONDS", help="cancel a batch job still queued after "
                   "this long (default: the cluster profile's queue_timeout_s, 3600)")  # fmt: skip
    if dry_run:
        p.add_argument("--dry-run", action="store_true", help="print the command or batch script; start nothing")


def placement(args: argparse.Namespace) -> Replicated:
    return backends.placement(args.orchestrator, args.cluster, queue_timeout_s=args.queue_timeout)


def state_or_prune(entry: registry.Entry) -> str:
    """The entry's state; one whose process or job has gone is removed from the registry (stale). A
    process started on another host is not checked (nor pruned) from here: where it runs is said."""
    if entry.elsewhere:
        return f"on {entry.elsewhere} (not checked from this host)"
    st = manager.status(entry)
    if st.state in (ServiceState.STOPPED, ServiceState.FAILED):
        registry.remove(entry.id)
        return f"{st.state.value}, gone: entry removed"
    return st.state.value


def find(entry_id: str, command: str) -> registry.Entry | None:
    try:
        return registry.get(entry_id)
    except KeyError:
        what = "service" if command == "server" else command
        err(f"no {what} {entry_id!r}; see 'ubenchai {command} list'")
        return None


def stop(entry: registry.Entry) -> int:
    manager.stop(entry.id)
    print(f"stopped {entry.id}")
    return EXIT_OK
