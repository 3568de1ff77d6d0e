"""``ubenchai client run|calibrate|list|status|stop``: benchmark runs outside pytest, on the same run core."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from ..load import calibrate, parallel
from ..metrics import compare
from ..metrics.results import CaseResult
from ..orchestrators import registry
from ..orchestrators.base import MissingVariable, ServiceError
from ..recipes.sweep import Case
from ..report.progress import LiveDisplay, StageLines
from ..session import BASELINE_RUNS, BenchmarkRun, Gate, RunOptions, Services, TargetUnreachable, manager
from . import entries, server
from .console import EXIT_OK, EXIT_SLO, EXIT_TARGET, EXIT_USAGE, console, err, json_option, listing, out


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    client = sub.add_parser("client", help="run benchmark workloads")
    csub = client.add_subparsers(dest="action", required=True)
    run = csub.add_parser("run", help="run a recipe's workload (every sweep point) and write results")
    entries.recipe_options(run)
    run.add_argument("--target", metavar="URL|ID", help="benchmark this running service (a URL, or an id from "
                     "'server list') instead of starting one")  # fmt: skip
    run.add_argument("--output", type=Path, metavar="DIR", help="default: ubench-results/<timestamp>")
    entries.placement_options(run, dry_run=True)
    run.add_argument(
        "--baseline", metavar="NAME|PATH", help="compare each case with its baseline (exit 1 on regression)"
    )
    run.add_argument("--save-baseline", nargs="?", const="default", metavar="NAME|PATH",
                     help="add the run's cases to a baseline")  # fmt: skip
    run.add_argument("--baseline-runs", type=int, default=BASELINE_RUNS, metavar="N",
                     help=f"runs of each case when saving a baseline (default {BASELINE_RUNS})")  # fmt: skip
    cal = csub.add_parser(
        "calibrate", help="measure the rate below which this machine's client results are trustworthy"
    )
    cal.add_argument("--workers", default="1", metavar="N|auto", help="client processes (default 1)")
    cal.add_argument("--seconds", type=float, default=3.0, help="length of each rate step (default 3)")
    cal.add_argument("--max-rate", type=float, default=256_000.0, help="highest rate tried (default 256,000)")
    cal.add_argument("--server", choices=["auto", "nginx", "builtin"], default="auto",
                     help="the no-op server: nginx when installed (auto), else the built-in one")  # fmt: skip
    json_option(csub.add_parser("list", help="client runs going on now (from any terminal)"))
    for verb, text in (("status", "state and cases done of a client run"), ("stop", "Ctrl-C a client run")):
        p = csub.add_parser(verb, help=text)
        p.add_argument("client_id", metavar="ID", help="as 'ubenchai client list' shows it")
        if verb == "status":
            json_option(p)
    client.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    if args.action == "run":
        return _run(args)
    if args.action == "calibrate":
        return _calibrate(args)
    if args.action == "list":
        rows = []
        for entry in registry.all_entries("client"):
            running, done = manager.client_progress(entry)
            if not running and not entry.elsewhere:
                registry.remove(entry.id)
            state = "running" if running else "gone: entry removed"
            if entry.elsewhere:
                state = f"on {entry.elsewhere} (not checked from this host)"
            rows.append((entry.id, entry.recipe, state, f"{done}/{entry.extra['cases']}", entry.run_dir, entry.started))
        listing(
            args.json,
            ("id", "recipe", "state", "cases done", "results", "started"),
            rows,
            "no client runs going on (start one: ubenchai client run --recipe NAME)",
        )
        return EXIT_OK
    found = entries.find(args.client_id, "client")
    if found is None:
        return EXIT_USAGE
    if args.action == "stop":
        if not manager.client_stop(found):
            err(f"{found.id} did not stop within 120 s")
            return EXIT_TARGET
        print(f"stopped {found.id}; partial results in {found.run_dir}")
        return EXIT_OK
    running, done = manager.client_progress(found)
    if args.json:
        print(
            json.dumps(
                {
                    "id": found.id,
                    "recipe": found.recipe,
                    "state": "running" if running else "gone",
                    "cases_done": done,
                    "cases": found.extra["cases"],
                    "results": found.run_dir,
                },
                indent=2,
            )
        )
    else:
        print(f"{found.id}: {'running' if running else 'gone'}, {done}/{found.extra['cases']} cases done, "
              f"{found.run_dir}")  # fmt: skip
    return EXIT_OK if running else EXIT_TARGET


def _run(args: argparse.Namespace) -> int:
    run = BenchmarkRun(RunOptions(
        recipes=[args.recipe], overrides=args.overrides, settings=entries.settings(args), output=args.output,
        orchestrator=args.orchestrator, queue_timeout_s=args.queue_timeout,
        cluster=args.cluster, target=args.target, baseline=args.baseline, save_baseline=args.save_baseline,
        baseline_runs=args.baseline_runs,
    ))  # fmt: skip
    if args.dry_run:
        return server.dry_run(run, run.cases[0].loaded)
    done: list[tuple[Case, CaseResult, Gate]] = []
    code = EXIT_OK
    entry = manager.client_register(run.cases[0].recipe.name, run.root, len(run.cases))
    try:
        with run.services() as services:
            for case in run.cases:
                try:
                    res = _with_progress(run, case, services)
                    done.append((case, res, run.gate(case, res, services)))  # a flag is re-measured: services up
                except MissingVariable as exc:  # a usage problem, not a failed service
                    err(str(exc))
                    return EXIT_USAGE
                except TargetUnreachable as exc:
                    err(str(exc))
                    return EXIT_TARGET
                except ServiceError as exc:
                    err(str(exc))
                    code = EXIT_TARGET
                    break
    finally:
        registry.remove(entry.id)
    for _, res, gate in done:
        _print_result(res)
        if res.service_failure:
            code = EXIT_TARGET
        elif not res.passed and code == EXIT_OK:
            code = EXIT_SLO
        if args.baseline:
            print(compare.table(gate.comparisons) if gate.comparisons is not None
                  else f"{res.case_id}: no baseline case to compare with")  # fmt: skip
        for i, again in enumerate(gate.confirmations):
            print(f"re-measured on a fresh deployment ({i + 1}):\n{compare.table(again)}")
        if gate.regressed and code == EXIT_OK:
            code = EXIT_SLO
        if gate.saved is not None:
            print(f"baseline saved: {gate.saved}")
    if done:
        for summary in run.finish():
            print(f"{summary.describe()} ({summary.path})")
    print(f"results: {run.root}")
    return code


def _with_progress(run: BenchmarkRun, case: Case, services: Services) -> CaseResult:
    if not console.is_terminal:
        lines = StageLines(case.id, case.recipe.workload.warmup_s, lambda line: console.print(line, highlight=False))
        return run.run_case(case, services, lines)
    with LiveDisplay(case.id, console) as live:
        return run.run_case(case, services, live)


def _print_result(res: CaseResult) -> None:
    table = Table(title=f"{res.case_id}  ({'PASS' if res.passed else 'FAIL'})", title_justify="left")
    columns = ("count", "mean", "p50", "p90", "p99", "max")
    table.add_column("metric")
    for col in columns:
        table.add_column(col, justify="right")
    for name, s in res.result["metrics"].items():
        table.add_row(
            name, *(str(s[c]) if c == "count" else "-" if s.get(c) is None else f"{s[c]:.2f}" for c in columns)
        )
    out.print(table)
    print(res.key_figures())
    if res.service_failure:
        err(res.service_failure)
    for v in res.verdicts:
        print(f"  {v.describe()}")


def _calibrate(args: argparse.Namespace) -> int:
    workers = parallel.worker_count(args.workers if args.workers == "auto" else int(args.workers))
    table = Table("target req/s", "achieved", "send lag p99 ms", "CPU max", "kept up", title="client calibration")

    def row(step: calibrate.Step) -> None:
        c = step.check
        said = "kept up" if step.kept_up else "; ".join(c["reasons"])
        cpu = "-" if c["cpu_busy_max"] is None else f"{c['cpu_busy_max']:.0%}"
        lag = "-" if step.send_lag_p99_ms is None else f"{step.send_lag_p99_ms:.2f}"
        table.add_row(f"{step.rate:,.0f}", f"{step.achieved:,.0f}", lag, cpu, "yes" if step.kept_up else "no")
        console.print(f"{step.rate:>9,.0f} req/s: {said}", highlight=False)

    with calibrate.noop_server(args.server, processes=max(1, workers)) as (port, what):
        console.print(f"{workers} client process(es) against {what}, {args.seconds:g} s per step", highlight=False)
        steps = calibrate.calibrate(port, workers, args.seconds, limit=args.max_rate, on_step=row)
    console.print(table)
    best = calibrate.trustworthy(steps)
    if best is None:
        err(f"the client did not keep up even at {steps[0].rate:,.0f} req/s on this machine")
        return EXIT_SLO
    if best == steps[-1].rate:
        print(f"kept up at every rate tried, up to {best:,.0f} req/s (raise --max-rate to find the limit)")
    print(f"trustworthy below {best:,.0f} req/s with {workers} client process(es) (non-streaming; {what})")
    return EXIT_OK
