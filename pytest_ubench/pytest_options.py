"""The pytest face's options: each ``--ubench-*`` flag, its ini key (pytest.ini, pyproject.toml,
tox.ini) and how a value is found (command line over ini file over default). Light on purpose, like
:mod:`pytest_ubench.plugin`: every pytest run in the environment loads it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

if TYPE_CHECKING:
    from .session import RunOptions

BASELINE_RUNS = 5  # the run core's default (session.runs.BASELINE_RUNS; a test checks they agree)

# (option, metavar, help, extra keyword arguments of addoption)
OPTIONS: list[tuple[str, str | None, str, dict[str, Any]]] = [
    ("recipe", "NAME|PATH", "recipe to run (repeatable); each sweep point becomes a test case",
     {"action": "append", "default": []}),
    ("override", "FILE", "YAML merged over every recipe (repeatable, later wins)", {"action": "append", "default": []}),
    ("set", "PATH=VALUE", "one value merged over every recipe after the override files, e.g. workload.duration_s=5 "
     "(repeatable; the value is YAML)", {"action": "append", "default": []}),
    ("output", "DIR", "results directory (default: ubench-results/<timestamp>)", {}),
    ("orchestrator", "NAME", "where services are deployed: local or slurm (default: the cluster profile's, else "
     "local processes)", {}),
    ("cluster", "NAME|PATH", "cluster profile (recipes/clusters/): account, partition, modules, binds for batch jobs",
     {}),
    ("queue-timeout", "SECONDS", "cancel a batch job still queued after this long (default: the cluster "
     "profile's queue_timeout_s, 3600)", {"type": float}),
    ("dry-run", None, "print what would be deployed (the batch script on Slurm) and exit without running anything",
     {"action": "store_true", "default": False}),
    ("pull-only", None, "pull the recipes' container images into the image cache (on a login node, before the "
     "jobs that use them) and exit", {"action": "store_true", "default": False}),
    ("target", "URL|ID", "benchmark an already running service (a URL, or an id from 'ubenchai server list') "
     "instead of starting the recipe's; a recipe without a service part gets this one", {}),
    ("save-baseline", "NAME|PATH", "add each case's runs to a baseline (default name: default)",
     {"nargs": "?", "const": "default"}),
    ("baseline-runs", "N", f"runs of each case when saving a baseline (default {BASELINE_RUNS}): their spread is "
     "what a gate judges a change by", {"type": int, "default": BASELINE_RUNS}),
    ("baseline", "NAME|PATH", "compare each case with its baseline; a statistically significant regression fails "
     "the case", {}),
    ("report", "FILE", "write the standalone offline HTML report of the run (plots, tables) at the end", {}),
    ("benchmark-json", "FILE", "also write the results as pytest-benchmark JSON (for tools that chart it over time)",
     {}),
]  # fmt: skip


def ini_key(name: str) -> str:
    """An option's ini key: the same name (``ubench_save_baseline``), but the recipes to run are
    ``ubench_recipes`` (a list, like the repeated option)."""
    return "ubench_recipes" if name == "recipe" else dest(name)


def dest(name: str) -> str:
    """Where pytest keeps an option's command-line value: ``--ubench-save-baseline`` in ``ubench_save_baseline``."""
    return f"ubench_{name.replace('-', '_')}"


def add(parser: pytest.Parser) -> None:
    """Each option on the command line and, under its ini key, in the ini file."""
    group = parser.getgroup("ubench", "pytest-ubench: benchmark services from recipes")
    for name, metavar, text, extra in OPTIONS:
        shown = {"metavar": metavar} if metavar else {}
        group.addoption(f"--ubench-{name}", help=text, **({"default": None} | shown | extra))
        action = extra.get("action")
        kind: Literal["linelist", "bool", "string"] = (
            "linelist" if action == "append" else "bool" if action == "store_true" else "string"
        )
        parser.addini(ini_key(name), f"as --ubench-{name} (the command line wins)", type=kind)
    parser.addini("ubench_recipe_dirs", "directories searched for recipe names", type="paths", default=[])


def option(config: pytest.Config, name: str) -> Any:
    """The command line's value, else the ini file's (pytest.ini, pyproject.toml, tox.ini), else the default."""
    value, default = config.getoption(dest(name)), DEFAULTS[name]
    if value != default:
        return value
    ini = config.getini(ini_key(name))
    if ini in ("", [], None) or (ini is False and default is False):
        return default
    convert = {"baseline-runs": int, "queue-timeout": float}.get(name)
    if convert is not None:
        try:
            return convert(ini)
        except ValueError:
            raise pytest.UsageError(f"{ini_key(name)} = {ini}: not a number") from None
    return ini


DEFAULTS = {name: extra.get("default") for name, _, _, extra in OPTIONS}


def given(config: pytest.Config) -> bool:
    """Whether any ``--ubench-*`` option is on the command line (the ini file alone does not make a run
    use the plugin: a project may set ``ubench_output`` and still run only its unit tests)."""
    return any(config.getoption(dest(name)) != DEFAULTS[name] for name in DEFAULTS)


def run_options(config: pytest.Config) -> RunOptions:
    from .recipes import loader
    from .session import RunOptions

    set_by = "--ubench-set" if config.getoption(dest("set")) else ini_key("set")  # what an error names
    return RunOptions(
        recipes=option(config, "recipe"),
        overrides=[Path(p) for p in option(config, "override")],
        settings=[loader.setting(text, set_by) for text in option(config, "set")],
        recipe_dirs=[Path(p) for p in config.getini("ubench_recipe_dirs")],
        output=Path(option(config, "output")),
        orchestrator=option(config, "orchestrator"),
        cluster=option(config, "cluster"),
        queue_timeout_s=option(config, "queue-timeout"),
        target=option(config, "target"),
        baseline=option(config, "baseline"),
        save_baseline=option(config, "save-baseline"),
        baseline_runs=option(config, "baseline-runs"),
    )
