"""The pytest face of pytest-ubench: options, fixtures and report hooks only.

Each recipe named by ``--ubench-recipe`` (or by a test's ``ubench`` marker) and each point of its
sweep becomes one parametrized case of any test that asks for the ``ubench_case`` fixture. The
work itself is done by :mod:`pytest_ubench.session`.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import logs
from .load.engine import Progress
from .metrics import baselines, capacity, compare
from .metrics.results import CaseResult, ResultsError, default_output_root, service_dir, write_text
from .orchestrators import backends
from .orchestrators.base import Orchestrator, ServiceError
from .recipes import loader
from .recipes.sweep import Case, expand
from .report import benchmark_json, standalone
from .report.allure_report import Recorder
from .report.progress import StageLines
from .report.summary import summary_html
from .session import Services, run_case, stop_shared

_services_key = pytest.StashKey[Services]()
_result_key = pytest.StashKey[CaseResult]()
_cases_key = pytest.StashKey[list[Case]]()
_orchestrator_key = pytest.StashKey[Orchestrator]()
_figure_key = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ubench", "pytest-ubench: benchmark services from recipes")
    group.addoption(
        "--ubench-recipe",
        action="append",
        default=[],
        metavar="NAME|PATH",
        help="recipe to run (repeatable); each sweep point becomes a test case",
    )
    group.addoption(
        "--ubench-override",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML merged over every recipe (repeatable, later wins)",
    )
    group.addoption(
        "--ubench-output", default=None, metavar="DIR", help="results directory (default: ubench-results/<timestamp>)"
    )
    group.addoption(
        "--ubench-orchestrator",
        default=None,
        choices=backends.names(),
        help="where services are deployed (default: the cluster profile's, else local processes)",
    )
    group.addoption(
        "--ubench-cluster",
        default=None,
        metavar="NAME|PATH",
        help="cluster profile (recipes/clusters/): account, partition, modules, binds for batch jobs",
    )
    group.addoption(
        "--ubench-dry-run",
        action="store_true",
        default=False,
        help="print what would be deployed (the batch script on Slurm) and exit without running anything",
    )
    group.addoption(
        "--ubench-target",
        default=None,
        metavar="URL",
        help="benchmark an already running service instead of starting the recipe's",
    )
    group.addoption(
        "--ubench-save-baseline",
        nargs="?",
        const="default",
        default=None,
        metavar="NAME|PATH",
        help="store each case's results and raw records as a baseline (default name: default)",
    )
    group.addoption(
        "--ubench-baseline",
        default=None,
        metavar="NAME|PATH",
        help="compare each case with its baseline; a statistically significant regression fails the case",
    )
    group.addoption(
        "--ubench-report",
        default=None,
        metavar="FILE",
        help="write the standalone offline HTML report of the run (plots, tables) at the end",
    )
    group.addoption(
        "--ubench-benchmark-json",
        default=None,
        metavar="FILE",
        help="also write the results as pytest-benchmark JSON (for tools that chart it over time)",
    )
    parser.addini("ubench_recipe_dirs", "directories searched for recipe names", type="paths", default=[])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ubench(*recipes): recipes a test runs when --ubench-recipe is not given")
    logs.configure(verbose=config.option.verbose > 1, console=False)
    worker = getattr(config, "workerinput", None)
    if worker is not None:  # xdist: every worker writes under the controller's one results root
        config.option.ubench_output = worker["ubench_output"]
    elif not config.option.ubench_output:
        config.option.ubench_output = str(default_output_root())
    names = config.getoption("ubench_recipe")
    if names:
        # Loaded once, up front: a broken recipe is a usage error (one line, exit 4), not a traceback.
        try:
            config.stash[_cases_key] = _cases(config, names)
        except loader.RecipeError as exc:
            raise pytest.UsageError(str(exc)) from None
    try:
        config.stash[_orchestrator_key] = backends.placement(
            config.getoption("ubench_orchestrator"), config.getoption("ubench_cluster"), _recipe_dirs(config)
        )
    except (loader.RecipeError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("ubench_dry_run"):
        _dry_run(config)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM takes the Ctrl-C path, so fixtures tear services down and partial results are kept.
        signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: hand the results root to each worker."""
    node.workerinput["ubench_output"] = node.config.option.ubench_output


def _dry_run(config: pytest.Config) -> None:
    cases = config.stash.get(_cases_key, [])
    if not cases:
        raise pytest.UsageError("--ubench-dry-run needs --ubench-recipe")
    orch = config.stash[_orchestrator_key]
    root = Path(config.getoption("ubench_output"))
    seen: set[str] = set()
    for case in cases:
        recipe = case.recipe
        spec = recipe.service
        if recipe.name in seen or spec is None or spec.command is None:
            continue
        seen.add(recipe.name)
        try:
            text = orch.dry_run(spec, recipe.name, service_dir(root, recipe.name))
        except ServiceError as exc:
            raise pytest.UsageError(str(exc)) from None
        print(f"# --- {recipe.name} ({orch.name}) ---\n{text}", flush=True)
    pytest.exit("dry run: nothing was deployed", returncode=0)


def _recipe_dirs(config: pytest.Config) -> list[Path]:
    return [Path(p) for p in config.getini("ubench_recipe_dirs")]


def _cases(config: pytest.Config, names: list[str]) -> list[Case]:
    overrides = [Path(p) for p in config.getoption("ubench_override")]
    cases: list[Case] = []
    for name in names:
        cases += expand(loader.load(name, overrides, _recipe_dirs(config)))
    return cases


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "ubench_case" not in metafunc.fixturenames:
        return
    cases = metafunc.config.stash.get(_cases_key, None)
    if cases is None:
        names = [name for marker in metafunc.definition.iter_markers("ubench") for name in marker.args]
        if not names:
            names = [p.stem for p in loader.available(_recipe_dirs(metafunc.config))]
        try:
            cases = _cases(metafunc.config, names)
        except loader.RecipeError as exc:
            pytest.fail(str(exc), pytrace=False)
    metafunc.parametrize("ubench_case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def ubench_services(request: pytest.FixtureRequest) -> Iterator[Services]:
    """Services deployed for this session's recipes; all stopped at the end, whatever happens."""
    config = request.config
    root = Path(config.getoption("ubench_output"))
    # Under pytest-xdist the workers share one deployment per recipe; the controller stops it at the end.
    shared = hasattr(config, "workerinput")
    services = Services(root, config.stash[_orchestrator_key], config.getoption("ubench_target"), shared=shared)
    config.stash[_services_key] = services
    try:
        yield services
    finally:
        services.close()


class Ubench:
    """What a benchmark test calls: ``ubench.run(ubench_case)`` runs it and judges the SLOs."""

    def __init__(self, item: pytest.Item, services: Services) -> None:
        self._item = item
        self._services = services
        self._allure = _allure(item.config)

    def run(self, case: Case, fail_on_slo: bool = True) -> CaseResult:
        w = case.recipe.workload
        self._allure.case(case, self._services.orchestrator.name)
        problem: str | None = None
        with self._allure.step(
            f"load: {case.load.mode} {case.point}, {w.duration_s:g} s after {w.warmup_s:g} s warm-up"
        ):
            try:
                result = run_case(case, self._services, _progress(self._item.config, case))
            except (ServiceError, ResultsError) as exc:
                problem = str(exc)
        if problem is not None:  # failed outside the except block: no "during handling of" chain
            pytest.fail(problem, pytrace=False)
        self._item.stash[_result_key] = result
        self._item.user_properties.append(("ubench", json.dumps(_compact(result))))
        self._item.user_properties.extend(_key_figures(result))  # JUnit XML <property> elements
        with self._allure.step("verdict: SLOs and baseline"):
            regressed = _baseline_gate(self._item.config, case, result)
        if self._allure.active:
            dep = self._services.get(case.loaded) if case.recipe.service is not None else None
            log_tail = self._services.orchestrator.logs(dep) if dep is not None and dep.handle else ""
            self._allure.attach(result.run_dir, dep.run_dir if dep else None, log_tail, _figure(self._item))
        if fail_on_slo and not result.passed:
            pytest.fail(result.failure_message() + (f"\n{regressed}" if regressed else ""), pytrace=False)
        if regressed:
            pytest.fail(regressed, pytrace=False)
        return result


def _figure(item: pytest.Item) -> str:
    """The case's latency CDFs, drawn once for every report layer that shows them."""
    if _figure_key not in item.stash:
        item.stash[_figure_key] = standalone.cdf_figure(item.stash[_result_key].run_dir)
    return item.stash[_figure_key]


def _allure(config: pytest.Config) -> Recorder:
    """Allure steps and attachments, recorded only when allure-pytest collects (``--alluredir``)."""
    return Recorder(active=bool(getattr(config.option, "allure_report_dir", None)))


def _baseline_gate(config: pytest.Config, case: Case, result: CaseResult) -> str | None:
    """Compare with the baseline and/or save into one; the failure message of a regression, if any."""
    regressed = None
    if config.getoption("ubench_baseline"):
        baseline = baselines.resolve(config.getoption("ubench_baseline"))
        rules = case.recipe.regression
        comparisons = baselines.gate(result.run_dir, baseline, rules.thresholds(), rules.alpha)
        if comparisons is not None and compare.regressions(comparisons):
            regressed = f"{case.id}: regression against the baseline\n{compare.table(comparisons)}"
    if config.getoption("ubench_save_baseline"):
        baselines.save(result.run_dir, baselines.resolve(config.getoption("ubench_save_baseline")))
    return regressed


def _progress(config: pytest.Config, case: Case) -> Progress | None:
    """A line per stage (warm-up, load, drain) on the terminal, so long runs are visibly alive."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or hasattr(config, "workerinput"):  # no terminal under xdist
        return None

    def write(line: str) -> None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("  " + line)

    return StageLines(case.id, case.recipe.workload.warmup_s, write)


@pytest.fixture
def ubench(request: pytest.FixtureRequest, ubench_services: Services) -> Ubench:
    """Deploys the case's service during setup: a service that will not start (or a target that cannot
    be reached, a job Slurm refuses) is an *error* of the case, not a *failure*; failures are verdicts."""
    callspec = getattr(request.node, "callspec", None)
    case = callspec.params.get("ubench_case") if callspec is not None else None
    if isinstance(case, Case) and case.recipe.service is not None:  # fio starts no service
        problem = None
        try:
            with _allure(request.config).step(f"deploy {case.recipe.name} ({ubench_services.orchestrator.name})"):
                ubench_services.get(case.loaded)
        except ServiceError as exc:
            problem = str(exc)
        if problem is not None:
            pytest.fail(problem, pytrace=False)
    return Ubench(request.node, ubench_services)


def _key_figures(result: CaseResult) -> list[tuple[str, object]]:
    r = result.result
    props: list[tuple[str, object]] = [("ubench.passed", result.passed)]
    for metric in ("ttft_ms", "itl_ms", "e2e_ms"):
        for stat in ("p50", "p95", "p99"):
            props.append((f"ubench.{metric}.{stat}", r["metrics"][metric][stat]))
    props += [(f"ubench.{k}", r["throughput"][k]) for k in ("requests_per_s", "output_tokens_per_s")]
    props.append(("ubench.error_rate", r["requests"]["error_rate"]))
    return props


def _compact(result: CaseResult) -> dict[str, Any]:
    return {
        "case": result.case_id,
        "figures": result.key_figures(),
        "results": str(result.run_dir / "results.json"),
        "slo": [v.describe() for v in result.verdicts],
    }


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    result = item.stash.get(_result_key, None)
    if report.when != "call" or result is None:
        return report
    try:
        from pytest_html import extras  # optional: richer reports come with pytest-html installed
    except ImportError:
        return report
    html = summary_html(result, _figure(item))
    report.extras = [*getattr(report, "extras", []), extras.html(html)]  # type: ignore[attr-defined]
    return report


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix: list[str], summary: list[str], postfix: list[str], session: Any) -> None:
    """pytest-html: the sweep curves (throughput and latency against load, knee marked) above the table."""
    root = Path(session.config.getoption("ubench_output"))
    if not hasattr(session.config, "workerinput") and any(root.glob("*/results.json")):
        prefix.append(standalone.sweeps_html(standalone.load(root)))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = []
    for key in ("passed", "failed"):
        for report in terminalreporter.stats.get(key, []):
            for name, value in getattr(report, "user_properties", []):
                if name == "ubench":
                    data = json.loads(value)
                    lines.append(f"{key.upper():6} {data['case']}: {data['figures']}")
    config = terminalreporter.config
    root = Path(config.getoption("ubench_output")) if _orchestrator_key in config.stash else None
    if root is not None and root.is_dir() and not hasattr(config, "workerinput"):
        by_recipe: dict[str, list[dict[str, Any]]] = {}
        for path in sorted(root.glob("*/results.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            by_recipe.setdefault(data["recipe"]["name"], []).append(data)
        for name, group in by_recipe.items():
            sweep = capacity.sweep(group)
            if sweep is not None:
                k, axis = sweep["knee"], sweep["axis"]
                lines.append(
                    f"SWEEP  {name}: " + (f"knee at {axis} = {k[axis]:g}" if k else "no knee within the sweep")
                )
            if (t := capacity.tradeoff(group)) is not None:
                lines.append(f"RECALL {name}: {capacity.describe_tradeoff(t)}")
    if lines:
        terminalreporter.write_sep("=", "ubench summary")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Runs even after Ctrl-C, when fixture teardown may not have: stop whatever is still up."""
    services = session.config.stash.get(_services_key, None)
    if services is not None:
        services.close()
    if not hasattr(session.config, "workerinput") and _orchestrator_key in session.config.stash:
        root = Path(session.config.getoption("ubench_output"))
        stop_shared(root, session.config.stash[_orchestrator_key])
        if root.is_dir():
            capacity.write_sweeps_under(root)  # sweeps/<recipe>.json: the knee, as data
        target = session.config.getoption("ubench_benchmark_json")
        if target and root.is_dir():
            benchmark_json.write(Path(target), root)
        report = session.config.getoption("ubench_report")
        if report and any(root.glob("*/results.json")):
            write_text(Path(report), standalone.render(root))
