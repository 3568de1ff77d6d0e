"""The plugin as a guest in someone else's pytest run: installed in the environment, it touches nothing
until a run uses it, and when one does, it takes back what it added (pytester, subprocesses)."""

from __future__ import annotations

import pytest
import yaml
from helpers import truth_recipe

from pytest_ubench import pytest_options
from pytest_ubench.session import BASELINE_RUNS

pytestmark = pytest.mark.integration

# A project that has never heard of ubench: its own loguru sink, and a test that looks at the process.
CONFTEST = """
import signal
from loguru import logger

seen = []
logger.add(seen.append, format="{message}")


def pytest_sessionfinish(session):
    logger.info("the project's own message, at the end")
    with open("seen.txt", "w") as out:
        out.write("".join(seen))
"""
FOREIGN_TEST = """
import signal
import sys


def test_the_process_is_as_the_project_left_it():
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    heavy = [m for m in ("pytest_ubench.session", "pytest_ubench.fixture", "numpy", "httpx") if m in sys.modules]
    assert not heavy, heavy
"""
USING_TEST = """
import signal


def test_llm(ubench_case, ubench):
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # SIGTERM stops services cleanly
    ubench.run(ubench_case)
"""


def test_an_unused_plugin_touches_nothing(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_foreign=FOREIGN_TEST)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    res.assert_outcomes(passed=1)
    assert "the project's own message, at the end" in (pytester.path / "seen.txt").read_text()
    assert not {"logs", "ubench-results"} & {p.name for p in pytester.path.iterdir()}
    assert "ubench summary" not in res.stdout.str()


def test_a_run_that_uses_it_gets_its_logs_and_then_the_process_back(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_bench=USING_TEST)
    (pytester.path / "recipes").mkdir()
    recipe = truth_recipe("manners", duration_s=0.5, load={"mode": "closed", "concurrency": 1})
    (pytester.path / "recipes" / "manners.yaml").write_text(yaml.safe_dump(recipe))
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--ubench-recipe=recipes/manners.yaml")
    res.assert_outcomes(passed=1)
    seen = (pytester.path / "seen.txt").read_text()
    assert "the project's own message, at the end" in seen  # the project's sink survived ubench's run
    ours = (pytester.path / "logs" / "ubenchai.log").read_text()
    assert "manners" in ours and "the project's own message" not in ours  # ubench's sink: ubench's messages


def test_the_plugin_states_the_run_cores_default() -> None:
    """The option's default is written in the plugin (importing the run core there would make every
    pytest run pay for it): it must be the run core's."""
    assert pytest_options.BASELINE_RUNS == BASELINE_RUNS


def test_its_debug_lines_stay_in_its_log_file_unless_asked(pytester: pytest.Pytester) -> None:
    """A project that never configured loguru: loguru's default sink would print every DEBUG line of ubench
    (a Slurm wait polls squeue every 50 ms) to the terminal. While ubench runs, its lines reach the terminal
    from INFO, the DEBUG ones only its log file, and -vv brings them back."""
    pytester.makepyfile(test_bench=USING_TEST)
    (pytester.path / "recipes").mkdir()
    recipe = truth_recipe("quiet", duration_s=0.5, load={"mode": "closed", "concurrency": 1})
    (pytester.path / "recipes" / "quiet.yaml").write_text(yaml.safe_dump(recipe))
    for flags, debug_shown in ((["-s"], False), (["-s", "-vv"], True)):
        res = pytester.runpytest_subprocess("-p", "no:cacheprovider", *flags, "--ubench-recipe=recipes/quiet.yaml")
        res.assert_outcomes(passed=1)
        shown = res.stdout.str() + res.stderr.str()
        assert "quiet-concurrency=1: closed load against" in shown  # INFO
        assert ("load finished:" in shown) is debug_shown  # a DEBUG line of the engine's
        assert "load finished:" in (pytester.path / "logs" / "ubenchai.log").read_text()
