"""The pytest face of pytest-ubench: options, fixtures and report hooks only.

Each recipe named by ``--ubench-recipe`` (or by a test's ``ubench`` marker) and each point of its
sweep becomes one parametrized case of any test that asks for the ``ubench_case`` fixture. The work
itself is done by the run core (:class:`pytest_ubench.session.BenchmarkRun`).

Installing the package loads this module into every pytest run of the environment, most of which never
benchmark anything. So it is dormant until used: a ``--ubench-*`` option given, or a test that asks for a
ubench fixture. Until then it imports nothing heavy, and leaves logging, files and signal handlers alone.
Once used, it adds its own log sink and SIGTERM handler and takes both away at the end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import pytest_options
from .stash import RESULT, RUN

if TYPE_CHECKING:
    from .fixture import Ubench
    from .metrics import capacity
    from .session import BenchmarkRun, Services

_services_key: pytest.StashKey[Services] = pytest.StashKey()
_sweeps_key: pytest.StashKey[list[capacity.Summary]] = pytest.StashKey()
_undo_key: pytest.StashKey[list[Any]] = pytest.StashKey()  # what using it changed in the process, undone at the end
_handed_key: pytest.StashKey[float] = pytest.StashKey()  # when the xdist controller handed workers a results root


def pytest_addoption(parser: pytest.Parser) -> None:
    pytest_options.add(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ubench(*recipes): recipes a test runs when --ubench-recipe is not given")
    if pytest_options.given(config):  # used from the command line: set up now, so a bad option stops the run
        _run(config)  # before collection


def _run(config: pytest.Config) -> BenchmarkRun:
    """The run, set up the first time something uses the plugin: options read, recipes loaded, and the
    process prepared (a log sink of ours, SIGTERM as Ctrl-C so services are stopped and results kept)."""
    if (run := config.stash.get(RUN, None)) is not None:
        return run
    from . import interrupts, logs
    from .recipes import loader
    from .session import BenchmarkRun

    config.stash[_undo_key] = [logs.configure(verbose=config.option.verbose > 1, guest=True)]
    worker = getattr(config, "workerinput", None)
    if worker is not None:  # xdist: every worker writes under the controller's one results root
        config.option.ubench_output = worker["ubench_output"]
    _output_root(config)
    try:  # loaded once, up front: a broken recipe or option is a usage error (one line, exit 4), not a traceback
        config.stash[RUN] = run = BenchmarkRun(pytest_options.run_options(config))
    except (loader.RecipeError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None
    for flag in ("dry-run", "pull-only"):
        if pytest_options.option(config, flag):
            _instead_of_running(run, flag)
    config.stash[_undo_key].append(interrupts.sigterm_as_interrupt())
    return run


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give the process back as it was: our log sink removed, the SIGTERM handler restored."""
    if not (undone := config.stash.get(_undo_key, [])):
        return  # never used: nothing to give back (and nothing to import)
    from . import interrupts, logs

    for undo in reversed(undone):
        if isinstance(undo, logs.Sinks):
            logs.release(undo)
        else:
            interrupts.restore(undo)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist: one results root for every worker, even when only their tests use the plugin."""
    node.workerinput["ubench_output"] = _output_root(node.config)
    node.config.stash.setdefault(_handed_key, time.time())


def _output_root(config: pytest.Config) -> str:
    """The run's results root: the one given (command line or ini), else one chosen here, once."""
    if not pytest_options.option(config, "output"):
        from .metrics.results import default_output_root

        config.option.ubench_output = str(default_output_root())
    return str(pytest_options.option(config, "output"))


def _instead_of_running(run: BenchmarkRun, flag: str) -> None:
    """``--ubench-dry-run`` (print what would be deployed) or ``--ubench-pull-only`` (pull the images), then exit."""
    from .orchestrators.base import ServiceError

    if not run.cases:
        raise pytest.UsageError(f"--ubench-{flag} needs --ubench-recipe")
    try:
        for line in run.preflight(pull=flag == "pull-only"):
            print(line, flush=True)
    except ServiceError as exc:
        raise pytest.UsageError(str(exc)) from None
    pytest.exit(f"{flag.replace('-', ' ')}: nothing was deployed", returncode=0)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "ubench_case" not in metafunc.fixturenames:
        return
    from .recipes import loader

    run = _run(metafunc.config)
    cases = run.cases
    if not run.options.recipes:
        names = [name for marker in metafunc.definition.iter_markers("ubench") for name in marker.args]
        if not names:
            on_path = ", ".join(run.recipe_names()) or "none"
            pytest.fail(f"no recipe to run: give --ubench-recipe=NAME, set ubench_recipes in pytest.ini, or mark "
                        f"the test @pytest.mark.ubench('NAME') (recipes on the search path: {on_path})",
                        pytrace=False)  # fmt: skip
        try:
            cases = run.cases_of(names)
        except loader.RecipeError as exc:
            pytest.fail(str(exc), pytrace=False)
    metafunc.parametrize("ubench_case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def ubench_services(request: pytest.FixtureRequest) -> Iterator[Services]:
    """Services deployed for this session's recipes; all stopped at the end, whatever happens."""
    # Under pytest-xdist the workers share one deployment per recipe; the controller stops it at the end.
    services = _run(request.config).services(shared=hasattr(request.config, "workerinput"))
    request.config.stash[_services_key] = services
    try:
        yield services
    finally:
        services.close()


@pytest.fixture
def ubench(request: pytest.FixtureRequest, ubench_services: Services) -> Ubench:
    """Deploys the case's service during setup: a service that will not start (or a target that cannot
    be reached, a job Slurm refuses) is an *error* of the case, not a *failure*; failures are verdicts."""
    from .fixture import Ubench, allure
    from .orchestrators.base import ServiceError
    from .recipes.sweep import Case

    callspec = getattr(request.node, "callspec", None)
    case = callspec.params.get("ubench_case") if callspec is not None else None
    if isinstance(case, Case) and case.recipe.service is not None:
        problem = None
        try:
            with allure(request.config).step(f"deploy {case.recipe.name} ({ubench_services.orchestrator.name})"):
                ubench_services.get(case)
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
    from .fixture import figure
    from .report.summary import summary_html

    report.extras = [*getattr(report, "extras", []), extras.html(summary_html(result, figure(item)))]  # type: ignore[attr-defined]
    return report


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix: list[str], summary: list[str], postfix: list[str], session: Any) -> None:
    """pytest-html: the sweep curves (throughput and latency against load, knee marked) above the table."""
    run = session.config.stash.get(RUN, None)
    if run is not None and not hasattr(session.config, "workerinput") and (cases := run.results.cases()):
        from .report import standalone

        prefix.append(standalone.sweeps_html(cases))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = [f"{key.upper():6} {data['case']}: {data['figures']}" for key, _, data in
             _ubench_reports(terminalreporter.config)]  # fmt: skip
    lines += [f"{s.kind.upper():6} {s.describe()}" for s in terminalreporter.config.stash.get(_sweeps_key, [])]
    if lines and getattr(terminalreporter.config.option, "numprocesses", None):
        lines.append("NOTE   under pytest-xdist, cases sharing a service took turns: no two loaded it at once")
    if lines:
        terminalreporter.write_sep("=", "ubench summary")
        for line in lines:
            terminalreporter.write_line(line)


def _ubench_reports(config: pytest.Config) -> Iterator[tuple[str, pytest.TestReport, dict[str, Any]]]:
    """(outcome, report, figures) of each case's call, as the controller saw it (under xdist too)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for key in ("passed", "failed"):
        for report in getattr(reporter, "stats", {}).get(key, []):
            for name, value in getattr(report, "user_properties", []):
                if name == "ubench":
                    yield key, report, json.loads(value)


def _tests_of_cases(config: pytest.Config) -> dict[str, str]:
    """The test function that ran each case: ``benchmarks/test_x.py::test_chat[case]`` gives test_chat."""
    return {data["case"]: report.nodeid.split("::")[-1].split("[")[0] for _, report, data in _ubench_reports(config)}


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Runs even after Ctrl-C, when fixture teardown may not have: stop whatever is still up."""
    services = session.config.stash.get(_services_key, None)
    if services is not None:
        services.close()
    if hasattr(session.config, "workerinput"):
        return
    run = session.config.stash.get(RUN, None)
    if run is None:
        # Under xdist only the workers' tests may have used the plugin: their results root exists, and
        # the controller ends their run (stops the services they shared, writes the summaries).
        root, handed = pytest_options.option(session.config, "output"), session.config.stash.get(_handed_key, None)
        if handed is None or not root or not any(p.stat().st_mtime >= handed for p in Path(root).glob("*")):
            return
        run = _run(session.config)
    session.config.stash[_sweeps_key] = run.finish(stop_shared_services=True)  # printed by the summary after
    if not run.results.case_dirs():
        return
    from .metrics.files import write_text
    from .report import benchmark_json, standalone

    if target := pytest_options.option(session.config, "benchmark-json"):
        benchmark_json.write(Path(target), run.root, _tests_of_cases(session.config))
    if report := pytest_options.option(session.config, "report"):
        write_text(Path(report), standalone.render(run.root))
