"""The pytest face of pytest-ubench: options, fixtures and report hooks only.

Each recipe named by ``--ubench-recipe`` (or by a test's ``ubench`` marker) and each point of its
sweep becomes one parametrized case of any test that asks for the ``ubench_case`` fixture. The work
itself is done by the run core (:class:`pytest_ubench.session.BenchmarkRun`).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import interrupts, logs
from .fixture import RESULT, RUN, Ubench, allure, figure
from .metrics import capacity
from .metrics.files import write_text
from .metrics.results import default_output_root
from .orchestrators import backends
from .orchestrators.base import ServiceError
from .recipes import loader
from .recipes.sweep import Case
from .report import benchmark_json, standalone
from .report.summary import summary_html
from .session import BenchmarkRun, RunOptions, Services

_services_key = pytest.StashKey[Services]()
_sweeps_key = pytest.StashKey[list[capacity.Summary]]()

# (option, metavar, help, extra keyword arguments of addoption)
OPTIONS: list[tuple[str, str | None, str, dict[str, Any]]] = [
    ("recipe", "NAME|PATH", "recipe to run (repeatable); each sweep point becomes a test case",
     {"action": "append", "default": []}),
    ("override", "FILE", "YAML merged over every recipe (repeatable, later wins)", {"action": "append", "default": []}),
    ("output", "DIR", "results directory (default: ubench-results/<timestamp>)", {}),
    ("orchestrator", None, "where services are deployed (default: the cluster profile's, else local processes)",
     {"choices": backends.names()}),
    ("cluster", "NAME|PATH", "cluster profile (recipes/clusters/): account, partition, modules, binds for batch jobs",
     {}),
    ("dry-run", None, "print what would be deployed (the batch script on Slurm) and exit without running anything",
     {"action": "store_true", "default": False}),
    ("target", "URL", "benchmark an already running service instead of starting the recipe's", {}),
    ("save-baseline", "NAME|PATH", "store each case's results and raw records as a baseline (default name: default)",
     {"nargs": "?", "const": "default"}),
    ("baseline", "NAME|PATH", "compare each case with its baseline; a statistically significant regression fails "
     "the case", {}),
    ("report", "FILE", "write the standalone offline HTML report of the run (plots, tables) at the end", {}),
    ("benchmark-json", "FILE", "also write the results as pytest-benchmark JSON (for tools that chart it over time)",
     {}),
]  # fmt: skip


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ubench", "pytest-ubench: benchmark services from recipes")
    for name, metavar, text, extra in OPTIONS:
        shown = {"metavar": metavar} if metavar else {}
        group.addoption(f"--ubench-{name}", help=text, **({"default": None} | shown | extra))
    parser.addini("ubench_recipe_dirs", "directories searched for recipe names", type="paths", default=[])


def _option(config: pytest.Config, name: str) -> Any:
    return config.getoption(f"ubench_{name.replace('-', '_')}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ubench(*recipes): recipes a test runs when --ubench-recipe is not given")
    logs.configure(verbose=config.option.verbose > 1, console=False)
    worker = getattr(config, "workerinput", None)
    if worker is not None:  # xdist: every worker writes under the controller's one results root
        config.option.ubench_output = worker["ubench_output"]
    elif not config.option.ubench_output:
        config.option.ubench_output = str(default_output_root())
    options = RunOptions(
        recipes=_option(config, "recipe"),
        overrides=[Path(p) for p in _option(config, "override")],
        recipe_dirs=[Path(p) for p in config.getini("ubench_recipe_dirs")],
        output=Path(_option(config, "output")),
        orchestrator=_option(config, "orchestrator"),
        cluster=_option(config, "cluster"),
        target=_option(config, "target"),
        baseline=_option(config, "baseline"),
        save_baseline=_option(config, "save-baseline"),
    )
    try:  # loaded once, up front: a broken recipe is a usage error (one line, exit 4), not a traceback
        config.stash[RUN] = run = BenchmarkRun(options)
    except (loader.RecipeError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None
    if _option(config, "dry-run"):
        _dry_run(run)
    interrupts.sigterm_as_interrupt()  # fixtures tear services down, partial results are kept


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: hand the results root to each worker."""
    node.workerinput["ubench_output"] = node.config.option.ubench_output


def _dry_run(run: BenchmarkRun) -> None:
    if not run.cases:
        raise pytest.UsageError("--ubench-dry-run needs --ubench-recipe")
    for loaded in dict.fromkeys(c.loaded for c in run.cases):
        try:
            text = run.dry_run(loaded)
        except ServiceError as exc:
            raise pytest.UsageError(str(exc)) from None
        if text is not None:
            print(f"# --- {loaded.recipe.name} ({run.orchestrator.name}) ---\n{text}", flush=True)
    pytest.exit("dry run: nothing was deployed", returncode=0)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "ubench_case" not in metafunc.fixturenames:
        return
    run = metafunc.config.stash[RUN]
    cases = run.cases
    if not run.options.recipes:
        names = [name for marker in metafunc.definition.iter_markers("ubench") for name in marker.args]
        try:
            cases = run.cases_of(names or run.recipe_names())
        except loader.RecipeError as exc:
            pytest.fail(str(exc), pytrace=False)
    metafunc.parametrize("ubench_case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def ubench_services(request: pytest.FixtureRequest) -> Iterator[Services]:
    """Services deployed for this session's recipes; all stopped at the end, whatever happens."""
    # Under pytest-xdist the workers share one deployment per recipe; the controller stops it at the end.
    services = request.config.stash[RUN].services(shared=hasattr(request.config, "workerinput"))
    request.config.stash[_services_key] = services
    try:
        yield services
    finally:
        services.close()


@pytest.fixture
def ubench(request: pytest.FixtureRequest, ubench_services: Services) -> Ubench:
    """Deploys the case's service during setup: a service that will not start (or a target that cannot
    be reached, a job Slurm refuses) is an *error* of the case, not a *failure*; failures are verdicts."""
    callspec = getattr(request.node, "callspec", None)
    case = callspec.params.get("ubench_case") if callspec is not None else None
    if isinstance(case, Case) and case.recipe.service is not None:
        problem = None
        try:
            with allure(request.config).step(f"deploy {case.recipe.name} ({ubench_services.orchestrator.name})"):
                ubench_services.get(case.loaded)
        except ServiceError as exc:
            problem = str(exc)
        if problem is not None:
            pytest.fail(problem, pytrace=False)
    return Ubench(request.node, ubench_services)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    result = item.stash.get(RESULT, None)
    if report.when != "call" or result is None:
        return report
    try:
        from pytest_html import extras  # optional: richer reports come with pytest-html installed
    except ImportError:
        return report
    report.extras = [*getattr(report, "extras", []), extras.html(summary_html(result, figure(item)))]  # type: ignore[attr-defined]
    return report


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix: list[str], summary: list[str], postfix: list[str], session: Any) -> None:
    """pytest-html: the sweep curves (throughput and latency against load, knee marked) above the table."""
    run = session.config.stash.get(RUN, None)
    if run is not None and not hasattr(session.config, "workerinput") and (cases := run.results.cases()):
        prefix.append(standalone.sweeps_html(cases))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = []
    for key in ("passed", "failed"):
        for report in terminalreporter.stats.get(key, []):
            for name, value in getattr(report, "user_properties", []):
                if name == "ubench":
                    data = json.loads(value)
                    lines.append(f"{key.upper():6} {data['case']}: {data['figures']}")
    lines += [f"{s.kind.upper():6} {s.describe()}" for s in terminalreporter.config.stash.get(_sweeps_key, [])]
    if lines and getattr(terminalreporter.config.option, "numprocesses", None):
        lines.append("NOTE   under pytest-xdist, cases sharing a service took turns: no two loaded it at once")
    if lines:
        terminalreporter.write_sep("=", "ubench summary")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Runs even after Ctrl-C, when fixture teardown may not have: stop whatever is still up."""
    services = session.config.stash.get(_services_key, None)
    if services is not None:
        services.close()
    run = session.config.stash.get(RUN, None)
    if run is None or hasattr(session.config, "workerinput"):
        return
    session.config.stash[_sweeps_key] = run.finish(stop_shared_services=True)  # printed by the summary after
    if not run.results.case_dirs():
        return
    if target := _option(session.config, "benchmark-json"):
        benchmark_json.write(Path(target), run.root)
    if report := _option(session.config, "report"):
        write_text(Path(report), standalone.render(run.root))
