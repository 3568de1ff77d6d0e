"""``ubenchai monitor start|list|stop|metrics|report``: Prometheus (and Grafana) for running services."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from ..orchestrators import registry
from ..orchestrators.base import ServiceError
from ..recipes import loader
from ..recipes.schema import GrafanaServer
from ..report import standalone
from ..session import manager
from . import entries
from .console import EXIT_OK, EXIT_RESULTS, EXIT_TARGET, EXIT_USAGE, err, json_option, listing, page, tunnel_hint


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    monitor = sub.add_parser("monitor", help="Prometheus for services started with 'server start'")
    msub = monitor.add_subparsers(dest="action", required=True)
    mstart = msub.add_parser("start", help="start Prometheus scraping the given services; leave it running")
    mstart.add_argument("--recipe", required=True, metavar="NAME|PATH", help="a monitor recipe (recipes/monitors/)")
    mstart.add_argument("--targets", default="", metavar="ID,...", help="service ids from 'server list'")
    mstart.add_argument("--output", type=Path, metavar="DIR", help="config and data (default: ubench-results/)")
    mstart.add_argument("--grafana", action="store_true", help="also run Grafana (its image, via Apptainer)")
    entries.placement_options(mstart)
    json_option(msub.add_parser("list", help="running monitors"))
    mstop = msub.add_parser("stop", help="stop a monitor")
    mstop.add_argument("monitor_id", metavar="ID", help="as 'ubenchai monitor list' shows it")
    for verb, text in (("metrics", "export the monitor's series"), ("report", "summary of the monitor's series")):
        p = msub.add_parser(verb, help=text)
        p.add_argument("monitor_id", metavar="ID", help="as 'ubenchai monitor list' shows it")
        p.add_argument("--output", type=Path, metavar="FILE", help="default: standard output")
        p.add_argument("--since", type=float, metavar="SECONDS", help="only the last SECONDS (default: all)")
        formats = ["json", "csv"] if verb == "metrics" else ["json", "html", "pdf"]
        p.add_argument("--format", choices=formats, default="json", help=f"{' | '.join(formats)} (default json)")
    monitor.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.action == "start":
        return _start(args)
    if args.action == "list":
        rows = [(e.id, e.recipe, e.endpoint.url, entries.state_or_prune(e), ",".join(e.extra["targets"]), e.started)
                for e in registry.all_entries("monitor")]  # fmt: skip
        listing(
            args.json,
            ("id", "recipe", "prometheus", "state", "targets", "started"),
            rows,
            "no monitors running (start one: ubenchai monitor start --recipe NAME --targets ID)",
        )
        return EXIT_OK
    found = entries.find(args.monitor_id, "monitor")
    if found is None:
        return EXIT_USAGE
    entry = found
    if args.action == "stop":
        return entries.stop(entry)
    data = manager.monitor_metrics(entry, args.since)
    if args.format in ("html", "pdf"):
        target = args.output or Path(entry.run_dir) / f"report.{args.format}"
        try:
            page(target, args.format, standalone.render_monitor(data))
        except (FileNotFoundError, RuntimeError) as exc:
            err(str(exc))
            return EXIT_USAGE if isinstance(exc, FileNotFoundError) else EXIT_RESULTS
        print(target)
        return EXIT_OK
    if args.action == "report":  # the figures without the series
        data["queries"] = {
            k: {s: v[s] for s in ("query", "min", "mean", "max", "last")} for k, v in data["queries"].items()
        }
    text = _csv(data) if args.format == "csv" else json.dumps(data, indent=2) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _start(args: argparse.Namespace) -> int:
    mon = loader.load_monitor(args.recipe)
    if args.grafana and mon.grafana is None:
        mon = mon.model_copy(update={"grafana": GrafanaServer()})
    ids = [i for i in args.targets.split(",") if i]
    try:
        entry = manager.monitor_start(mon, ids, args.output or Path("ubench-results"), entries.placement(args))
    except KeyError as exc:
        err(f"no service {exc.args[0]!r}; see 'ubenchai server list'")
        return EXIT_USAGE
    except ServiceError as exc:
        err(str(exc))
        return EXIT_TARGET
    print(f"{entry.id} {entry.endpoint.url}")
    tunnel_hint(entry.endpoint, "Prometheus")
    board = manager.grafana_deployment(entry)
    if board is not None:
        g = entry.extra["grafana"]
        print(f"grafana {board.endpoint.url} user {g['user']}, password in {g['password_file']}")
        tunnel_hint(board.endpoint, "Grafana")
    return EXIT_OK


def _csv(data: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["query", "timestamp", "value"])
    for name, q in data["queries"].items():
        writer.writerows([name, t, v] for t, v in q["series"])
    return buf.getvalue()
