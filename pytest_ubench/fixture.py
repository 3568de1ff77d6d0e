"""The ``ubench`` fixture's object, what a benchmark test calls (as pytest-benchmark's ``fixture.py`` holds
its ``BenchmarkFixture``): run the case, gate it, fail it with measured vs allowed, and hand its figures
to every report layer (JUnit properties, pytest-html, Allure, the terminal summary)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .metrics.results import CaseResult, ResultsError, flat_figures
from .orchestrators.base import ServiceError
from .recipes.sweep import Case
from .report import standalone
from .report.allure_report import Recorder
from .report.progress import StageLines
from .session import Services
from .stash import RESULT, RUN

FIGURE = pytest.StashKey[str]()


class Ubench:
    """What a benchmark test calls: ``ubench.run(ubench_case)`` runs it and judges the SLOs."""

    def __init__(self, item: pytest.Item, services: Services) -> None:
        self._item = item
        self._services = services
        self._allure = allure(item.config)

    def run(self, case: Case, fail_on_slo: bool = True) -> CaseResult:
        run, w = self._item.config.stash[RUN], case.recipe.workload
        self._allure.case(case, self._services.orchestrator.name)
        problem: str | None = None
        with self._allure.step(
            f"load: {case.load.mode} {case.point}, {w.duration_s:g} s after {w.warmup_s:g} s warm-up"
        ):
            try:
                result = run.run_case(case, self._services, _progress(self._item.config, case))
            except (ServiceError, ResultsError) as exc:
                problem = str(exc)
        if problem is not None:  # failed outside the except block: no "during handling of" chain
            pytest.fail(problem, pytrace=False)
        self._item.stash[RESULT] = result
        self._item.user_properties.append(("ubench", json.dumps(_compact(result))))
        self._item.user_properties.extend(_key_figures(result))  # JUnit XML <property> elements
        with self._allure.step("verdict: SLOs and baseline"):
            regressed = run.gate(case, result, self._services, _progress(self._item.config, case)).regressed
        if self._allure.active:
            dep = self._services.get(case) if case.recipe.service is not None else None
            log_tail = self._services.orchestrator.logs(dep) if dep is not None and dep.handle else ""
            self._allure.attach(result.run_dir, dep.run_dir if dep else None, log_tail, figure(self._item))
        if fail_on_slo and not result.passed:
            pytest.fail(result.failure_message() + (f"\n{regressed}" if regressed else ""), pytrace=False)
        if regressed:
            pytest.fail(regressed, pytrace=False)
        return result


def figure(item: pytest.Item) -> str:
    """The case's latency CDFs, drawn once for every report layer that shows them."""
    if FIGURE not in item.stash:
        item.stash[FIGURE] = standalone.cdf_figure(item.stash[RESULT])
    return item.stash[FIGURE]


def allure(config: pytest.Config) -> Recorder:
    """Allure steps and attachments, recorded only when allure-pytest collects (``--alluredir``)."""
    return Recorder(active=bool(getattr(config.option, "allure_report_dir", None)))


def _progress(config: pytest.Config, case: Case) -> StageLines | None:
    """A line per stage (warm-up, load, drain) on the terminal, so long runs are visibly alive."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or hasattr(config, "workerinput"):  # no terminal under xdist
        return None

    def write(line: str) -> None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("  " + line)

    return StageLines(case.id, case.recipe.workload.warmup_s, write)


def _key_figures(result: CaseResult) -> list[tuple[str, object]]:
    return [(f"ubench.{name}", value) for name, value in flat_figures(result.result).items()]


def _compact(result: CaseResult) -> dict[str, Any]:
    return {"case": result.case_id, "figures": result.key_figures(), "results": str(result.results_file),
            "slo": [v.describe() for v in result.verdicts]}  # fmt: skip
