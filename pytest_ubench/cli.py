"""The ``ubenchai`` command: the same core as the pytest plugin, outside pytest.

Exit codes (documented in the README): 0 every SLO passed; 1 an SLO failed; 2 usage or recipe
error; 3 the target could not be reached or the service failed; 4 results could not be written (disk
full, read-only); 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import logs, manager
from ._version import __version__
from .metrics import baselines, capacity, compare
from .metrics.results import CaseResult, ResultsError, default_output_root, service_dir, write_json, write_text
from .orchestrators import backends, registry
from .orchestrators.base import Endpoint, Orchestrator, ServiceError, ServiceState
from .recipes import loader
from .recipes.schema import GrafanaServer, Regression
from .recipes.sweep import Case, expand
from .report import browser, standalone
from .report.progress import LiveDisplay, StageLines
from .session import Services, TargetUnreachable, run_case

EXIT_OK, EXIT_SLO, EXIT_USAGE, EXIT_TARGET, EXIT_RESULTS, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_PIPE = 128 + signal.SIGPIPE  # the reader went away (`| head`): what a shell tool killed by SIGPIPE reports


class _Out(Console):
    """Rich exits 1 on a closed pipe; ours goes the way of every other write to stdout (``main``)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


console = Console(stderr=True)
out = _Out(width=None if sys.stdout.isatty() else 200)  # tables are not cut short in pipes and logs


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ubenchai", description="Benchmark AI-factory services from recipes.")
    ap.add_argument("--version", action="version", version=f"ubenchai {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="DEBUG logging (else UBENCHAI_LOG_LEVEL or INFO)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{server,client,monitor,compare,report,recipe}")

    server = sub.add_parser("server", help="start, list, check and stop long-lived services")
    ssub = server.add_subparsers(dest="action", required=True)
    start = ssub.add_parser("start", help="start a recipe's service, wait until healthy, leave it running")
    start.add_argument("--recipe", required=True, metavar="NAME|PATH")
    start.add_argument("--overrides", action="append", default=[], type=Path, metavar="FILE")
    start.add_argument("--output", type=Path, metavar="DIR", help="logs and endpoint file (default: ubench-results/)")
    _placement_options(start, dry_run=True)
    ssub.add_parser("list", help="services started by 'server start' and their state")
    for verb, text in (
        ("status", "state, health and log tail of a service"),
        ("logs", "the last lines of a service's log"),
        ("stop", "stop a service"),
    ):
        p = ssub.add_parser(verb, help=text)
        p.add_argument("service_id", metavar="ID")
        if verb == "logs":
            p.add_argument("-n", "--lines", type=int, default=40)

    cmp = sub.add_parser("compare", help="compare two result directories case by case (exit 1 on regression)")
    cmp.add_argument("baseline", type=Path, metavar="BASELINE_DIR")
    cmp.add_argument("current", type=Path, metavar="CURRENT_DIR")
    cmp.add_argument("--min-change", type=float, default=0.10, help="relative change that can count (default 0.10)")
    cmp.add_argument("--alpha", type=float, default=0.01, help="significance level (default 0.01)")

    rep = sub.add_parser("report", help="one self-contained report of a results directory (offline HTML, JSON, PDF)")
    rep.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    rep.add_argument("--format", choices=["html", "json", "pdf"], default="html")
    rep.add_argument("--output", type=Path, metavar="FILE", help="default: RUN_DIR/report.<format>")

    recipe = sub.add_parser("recipe", help="list and validate recipes")
    rsub = recipe.add_subparsers(dest="action", required=True)
    rsub.add_parser("list", help="recipes on the search path (UBENCHAI_CONFIG_DIR, ./recipes)")
    validate = rsub.add_parser("validate", help="check recipe files; one line per problem")
    validate.add_argument("paths", nargs="+", metavar="PATH")
    validate.add_argument("--overrides", action="append", default=[], type=Path, metavar="FILE")

    monitor = sub.add_parser("monitor", help="Prometheus for services started with 'server start'")
    msub = monitor.add_subparsers(dest="action", required=True)
    mstart = msub.add_parser("start", help="start Prometheus scraping the given services; leave it running")
    mstart.add_argument("--recipe", required=True, metavar="NAME|PATH", help="a monitor recipe (recipes/monitors/)")
    mstart.add_argument("--targets", default="", metavar="ID,...", help="service ids from 'server list'")
    mstart.add_argument("--output", type=Path, metavar="DIR", help="config and data (default: ubench-results/)")
    mstart.add_argument("--grafana", action="store_true", help="also run Grafana (its image, via Apptainer)")
    _placement_options(mstart)
    msub.add_parser("list", help="running monitors")
    mstop = msub.add_parser("stop", help="stop a monitor")
    mstop.add_argument("monitor_id", metavar="ID")
    for verb, text in (("metrics", "export the monitor's series"), ("report", "summary of the monitor's series")):
        p = msub.add_parser(verb, help=text)
        p.add_argument("monitor_id", metavar="ID")
        p.add_argument("--output", type=Path, metavar="FILE", help="default: standard output")
        p.add_argument("--since", type=float, metavar="SECONDS", help="only the last SECONDS (default: all)")
        formats = ["json", "csv"] if verb == "metrics" else ["json", "html", "pdf"]
        p.add_argument("--format", choices=formats, default="json")

    client = sub.add_parser("client", help="run benchmark workloads")
    csub = client.add_subparsers(dest="action", required=True)
    run = csub.add_parser("run", help="run a recipe's workload (every sweep point) and write results")
    run.add_argument("--recipe", required=True, metavar="NAME|PATH")
    run.add_argument("--target", metavar="URL", help="benchmark this running service instead of starting one")
    run.add_argument("--overrides", action="append", default=[], type=Path, metavar="FILE")
    run.add_argument("--output", type=Path, metavar="DIR", help="default: ubench-results/<timestamp>")
    _placement_options(run, dry_run=True)
    run.add_argument(
        "--baseline", metavar="NAME|PATH", help="compare each case with its baseline (exit 1 on regression)"
    )
    run.add_argument(
        "--save-baseline", nargs="?", const="default", metavar="NAME|PATH", help="store the run as a baseline"
    )
    cal = csub.add_parser(
        "calibrate", help="measure the rate below which this machine's client results are trustworthy"
    )
    cal.add_argument("--workers", default="1", metavar="N|auto", help="client processes (default 1)")
    cal.add_argument("--seconds", type=float, default=3.0, help="length of each rate step (default 3)")
    cal.add_argument("--max-rate", type=float, default=256_000.0, help="highest rate tried (default 256,000)")
    cal.add_argument("--server", choices=["auto", "nginx", "builtin"], default="auto",
                     help="the no-op server: nginx when installed (auto), else the built-in one")  # fmt: skip
    csub.add_parser("list", help="client runs going on now (from any terminal)")
    for verb, text in (("status", "state and cases done of a client run"), ("stop", "Ctrl-C a client run")):
        p = csub.add_parser(verb, help=text)
        p.add_argument("client_id", metavar="ID")
    return ap


def _placement_options(p: argparse.ArgumentParser, dry_run: bool = False) -> None:
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


def _placement(args: argparse.Namespace) -> Orchestrator:
    return backends.placement(args.orchestrator, args.cluster)


def _dry_run(orch: Orchestrator, loaded: loader.LoadedRecipe, root: Path) -> int:
    spec = loaded.recipe.service
    if spec is None or spec.command is None:
        where = "runs fio here" if spec is None else f"gives a url ({spec.url})"
        _err(f"{loaded.recipe.name}: the recipe {where}; nothing would be deployed")
        return EXIT_USAGE
    try:
        print(orch.dry_run(spec, loaded.recipe.name, service_dir(root, loaded.recipe.name)))
    except ServiceError as exc:
        _err(str(exc))
        return EXIT_USAGE
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(verbose=args.verbose)
    # SIGTERM takes the Ctrl-C path: services are stopped and partial results written.
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        if args.command == "recipe":
            return _recipe_list() if args.action == "list" else _recipe_validate(args.paths, args.overrides)
        if args.command == "server":
            return _server(args)
        if args.command == "monitor":
            return _monitor(args)
        if args.command == "compare":
            return _compare(args)
        if args.command == "report":
            return _report(args)
        if args.action == "run":
            return _client_run(args)
        if args.action == "calibrate":
            return _client_calibrate(args)
        return _client(args)
    except (loader.RecipeError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except ResultsError as exc:
        _err(str(exc))
        return EXIT_RESULTS
    except KeyboardInterrupt:
        _err("interrupted; services stopped, results gathered so far were written")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Quietly, and without the interpreter's own failing flush of stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE


def _err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def _recipe_list() -> int:
    table = Table("name", "protocol", "load", "file")
    for path in loader.available():
        try:
            r = loader.load(path).recipe
            table.add_row(r.name, r.workload.protocol, r.workload.load.mode, str(path))
        except loader.RecipeError:
            table.add_row(path.stem, "[red]invalid[/red]", "", str(path))
    out.print(table)
    return EXIT_OK


def _recipe_validate(paths: list[str], overrides: list[Path]) -> int:
    bad = 0
    for p in paths:
        try:
            loaded = loader.load(p, overrides)
            cases = expand(loaded)
            print(f"{p}: ok ({len(cases)} case{'s' if len(cases) != 1 else ''})")
        except (loader.RecipeError, ValueError) as exc:
            bad += 1
            _err(str(exc))
    return EXIT_USAGE if bad else EXIT_OK


def _server(args: argparse.Namespace) -> int:
    if args.action == "start":
        loaded = loader.load(args.recipe, args.overrides)
        orch = _placement(args)
        if args.dry_run:
            return _dry_run(orch, loaded, args.output or Path("ubench-results"))
        try:
            entry = manager.start(loaded, args.output or Path("ubench-results"), orch)
        except ServiceError as exc:
            _err(str(exc))
            return EXIT_TARGET
        print(f"{entry.id} {entry.endpoint.url}")
        _tunnel_hint(entry.endpoint, entry.recipe)
        return EXIT_OK
    if args.action == "list":
        table = Table("id", "recipe", "url", "state", "started")
        for entry in registry.all_entries("service"):
            table.add_row(entry.id, entry.recipe, entry.endpoint.url, _state_or_prune(entry), entry.started)
        out.print(table)
        return EXIT_OK
    found = _find(args.service_id, "server")
    if found is None:
        return EXIT_USAGE
    entry = found
    if args.action == "stop":
        return _stop(entry)
    if args.action == "logs":
        print(manager.logs(entry, args.lines), end="")
        return EXIT_OK
    st = manager.status(entry)
    print(f"{entry.id}: {st.state.value}, health {'ok' if st.health is None else st.health}, {entry.endpoint.url}")
    print(manager.logs(entry, 20), end="")
    return EXIT_OK if st.state.value == "running" and st.health is None else EXIT_TARGET


def _state_or_prune(entry: registry.Entry) -> str:
    """The entry's state; one whose process or job has gone is removed from the registry (stale)."""
    st = manager.status(entry)
    if st.state in (ServiceState.STOPPED, ServiceState.FAILED):
        registry.remove(entry.id)
        return f"{st.state.value}, gone: entry removed"
    return st.state.value


def _tunnel_hint(endpoint: Endpoint, what: str) -> None:
    """A service in a batch job runs on a compute node: say how a workstation reaches it."""
    if not endpoint.job_id or not endpoint.node:
        return
    login, port = socket.getfqdn(), endpoint.port
    if endpoint.host.startswith(("127.", "::1", "localhost")):  # loopback on the node: jump through the login
        tunnel = f"ssh -J {login} -L {port}:127.0.0.1:{port} {endpoint.node}"
    else:
        tunnel = f"ssh -L {port}:{endpoint.host}:{port} {login}"
    console.print(f"{what} from your workstation: {tunnel}  then open http://localhost:{port}", soft_wrap=True)


def _find(entry_id: str, command: str) -> registry.Entry | None:
    try:
        return registry.load(entry_id)
    except KeyError:
        what = "service" if command == "server" else command
        _err(f"no {what} {entry_id!r}; see 'ubenchai {command} list'")
        return None


def _stop(entry: registry.Entry) -> int:
    manager.stop(entry.id)
    print(f"stopped {entry.id}")
    return EXIT_OK


def _monitor(args: argparse.Namespace) -> int:
    if args.action == "start":
        mon = loader.load_monitor(args.recipe)
        if args.grafana and mon.grafana is None:
            mon = mon.model_copy(update={"grafana": GrafanaServer()})
        ids = [i for i in args.targets.split(",") if i]
        try:
            entry = manager.monitor_start(mon, ids, args.output or Path("ubench-results"), _placement(args))
        except KeyError as exc:
            _err(f"no service {exc.args[0]!r}; see 'ubenchai server list'")
            return EXIT_USAGE
        except ServiceError as exc:
            _err(str(exc))
            return EXIT_TARGET
        print(f"{entry.id} {entry.endpoint.url}")
        _tunnel_hint(entry.endpoint, "Prometheus")
        board = manager.grafana_deployment(entry)
        if board is not None:
            g = entry.extra["grafana"]
            print(f"grafana {board.endpoint.url} user {g['user']}, password in {g['password_file']}")
            _tunnel_hint(board.endpoint, "Grafana")
        return EXIT_OK
    if args.action == "list":
        table = Table("id", "recipe", "prometheus", "state", "targets", "started")
        for entry in registry.all_entries("monitor"):
            table.add_row(entry.id, entry.recipe, entry.endpoint.url, _state_or_prune(entry),
                          ",".join(entry.extra["targets"]), entry.started)  # fmt: skip
        out.print(table)
        return EXIT_OK
    found = _find(args.monitor_id, "monitor")
    if found is None:
        return EXIT_USAGE
    entry = found
    if args.action == "stop":
        return _stop(entry)
    data = manager.monitor_metrics(entry, args.since)
    if args.format in ("html", "pdf"):
        target = args.output or Path(entry.run_dir) / f"report.{args.format}"
        try:
            _page(target, args.format, standalone.render_monitor(data))
        except (FileNotFoundError, RuntimeError) as exc:
            _err(str(exc))
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


def _csv(data: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["query", "timestamp", "value"])
    for name, q in data["queries"].items():
        writer.writerows([name, t, v] for t, v in q["series"])
    return buf.getvalue()


def _client_calibrate(args: argparse.Namespace) -> int:
    from .load import calibrate, parallel

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
        _err(f"the client did not keep up even at {steps[0].rate:,.0f} req/s on this machine")
        return EXIT_SLO
    if best == steps[-1].rate:
        print(f"kept up at every rate tried, up to {best:,.0f} req/s (raise --max-rate to find the limit)")
    print(f"trustworthy below {best:,.0f} req/s with {workers} client process(es) (non-streaming; {what})")
    return EXIT_OK


def _client_run(args: argparse.Namespace) -> int:
    loaded = loader.load(args.recipe, args.overrides)
    cases = expand(loaded)
    root = args.output or default_output_root()
    orch = _placement(args)
    if args.dry_run:
        return _dry_run(orch, loaded, root)
    results: list[CaseResult] = []
    code = EXIT_OK
    entry = manager.client_register(loaded.recipe.name, root, len(cases))
    try:
        with Services(root, orch, args.target) as services:
            for case in cases:
                try:
                    results.append(_run_with_progress(case, services))
                except TargetUnreachable as exc:
                    _err(str(exc))
                    return EXIT_TARGET
                except ServiceError as exc:
                    _err(str(exc))
                    code = EXIT_TARGET
                    break
    finally:
        registry.remove(entry.id)
    for res in results:
        _print_result(res)
        if res.service_failure:
            code = EXIT_TARGET
        elif not res.passed and code == EXIT_OK:
            code = EXIT_SLO
        if args.baseline:
            rules = loaded.recipe.regression
            comparisons = baselines.gate(res.run_dir, baselines.resolve(args.baseline), rules.thresholds(), rules.alpha)
            if comparisons is None:
                print(f"{res.case_id}: no baseline case to compare with")
            else:
                print(compare.table(comparisons))
                if compare.regressions(comparisons) and code == EXIT_OK:
                    code = EXIT_SLO
        if args.save_baseline:
            print(f"baseline saved: {baselines.save(res.run_dir, baselines.resolve(args.save_baseline))}")
    if results:
        for summary in capacity.write_sweeps(root, [r.result for r in results]):
            sweep = json.loads(summary.read_text(encoding="utf-8"))
            if "pareto" in sweep:
                print(f"{sweep['recipe']}: {capacity.describe_tradeoff(sweep)} ({summary})")
                continue
            knee = sweep["knee"]
            where = f"knee at {sweep['axis']} = {knee[sweep['axis']]:g}" if knee else "no knee within the sweep"
            print(f"{sweep['recipe']}: {where} ({summary})")
    print(f"results: {root}")
    return code


def _client(args: argparse.Namespace) -> int:
    if args.action == "list":
        table = Table("id", "recipe", "state", "cases done", "results", "started")
        for entry in registry.all_entries("client"):
            running, done = manager.client_progress(entry)
            if not running:
                registry.remove(entry.id)
            state = "running" if running else "gone: entry removed"
            table.add_row(entry.id, entry.recipe, state, f"{done}/{entry.extra['cases']}", entry.run_dir, entry.started)
        out.print(table)
        return EXIT_OK
    found = _find(args.client_id, "client")
    if found is None:
        return EXIT_USAGE
    if args.action == "stop":
        if not manager.client_stop(found):
            _err(f"{found.id} did not stop within 120 s")
            return EXIT_TARGET
        print(f"stopped {found.id}; partial results in {found.run_dir}")
        return EXIT_OK
    running, done = manager.client_progress(found)
    print(f"{found.id}: {'running' if running else 'gone'}, {done}/{found.extra['cases']} cases done, {found.run_dir}")
    return EXIT_OK if running else EXIT_TARGET


def _report(args: argparse.Namespace) -> int:
    target = args.output or args.run_dir / f"report.{args.format}"
    try:
        if args.format == "json":
            cases = [c.result for c in standalone.load(args.run_dir)]
            if not cases:
                raise FileNotFoundError(f"no case results (*/results.json) under {args.run_dir}")
            write_json(target, {"run": str(args.run_dir), "cases": cases})
        else:
            _page(target, args.format, standalone.render(args.run_dir))
    except FileNotFoundError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        _err(f"cannot write {target}: {exc.strerror or exc}")
        return EXIT_RESULTS
    except RuntimeError as exc:
        _err(str(exc))
        return EXIT_RESULTS
    print(target)
    return EXIT_OK


def _page(target: Path, fmt: str, text: str) -> None:
    """The HTML report, or the same page printed to PDF (the HTML is kept beside it)."""
    page = target if fmt == "html" else target.with_suffix(".html")
    write_text(page, text)
    if fmt == "pdf":
        browser.print_pdf(page, target)


def _compare(args: argparse.Namespace) -> int:
    def cases(root: Path) -> dict[str, Path]:
        return {p.parent.name: p.parent for p in sorted(root.glob("*/results.json"))}

    base, cur = cases(args.baseline), cases(args.current)
    if not base or not cur:
        _err(f"no case results (*/results.json) under {args.baseline if not base else args.current}")
        return EXIT_USAGE
    rules = Regression(min_change=args.min_change, alpha=args.alpha)
    regressed = False
    for case_id in sorted(base.keys() | cur.keys()):
        if case_id not in base or case_id not in cur:
            print(f"{case_id}: only in {args.current if case_id in cur else args.baseline}\n")
            continue
        comparisons = baselines.compare_dirs(base[case_id], cur[case_id], rules.thresholds(), rules.alpha)
        regressed |= bool(compare.regressions(comparisons))
        print(f"{case_id}\n{compare.table(comparisons)}\n")
    return EXIT_SLO if regressed else EXIT_OK


def _run_with_progress(case: Case, services: Services) -> CaseResult:
    if not console.is_terminal:
        lines = StageLines(case.id, case.recipe.workload.warmup_s, lambda line: console.print(line, highlight=False))
        return run_case(case, services, lines)
    with LiveDisplay(case.id, console) as live:
        return run_case(case, services, live)


def _print_result(res: CaseResult) -> None:
    table = Table(title=f"{res.case_id}  ({'PASS' if res.passed else 'FAIL'})", title_justify="left")
    table.add_column("metric")
    for col in ("count", "mean", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="right")
    for name, s in res.result["metrics"].items():
        table.add_row(
            name,
            *(
                ("-" if s.get(c) is None else f"{s[c]:.2f}") if c != "count" else str(s[c])
                for c in ("count", "mean", "p50", "p90", "p99", "max")
            ),
        )
    out.print(table)
    print(res.key_figures())
    if res.service_failure:
        _err(res.service_failure)
    for v in res.verdicts:
        print(f"  {v.describe()}")


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
