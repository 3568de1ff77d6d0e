"""What the long-lived commands (server, monitor, client) share: where things are placed, and the registry
entries of things left running (found by id, listed with their state, stopped)."""

from __future__ import annotations

import argparse

from ..orchestrators import backends, registry
from ..orchestrators.base import Orchestrator, ServiceState
from ..session import manager
from .console import EXIT_OK, err


def placement_options(p: argparse.ArgumentParser, dry_run: bool = False) -> None:
    p.add_argument("--orchestrator", choices=backends.names(), help="default: the cluster profile's, else local")
    p.add_argument(
        "--cluster",
        "--config",
        dest="cluster",
        metavar="NAME|PATH",
        help="cluster profile (recipes/clusters/): account, partition, modules, binds",
    )
    if dry_run:
        p.add_argument("--dry-run", action="store_true", help="print the command or batch script; start nothing")


def placement(args: argparse.Namespace) -> Orchestrator:
    return backends.placement(args.orchestrator, args.cluster)


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
