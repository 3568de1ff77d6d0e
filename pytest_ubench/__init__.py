"""pytest-ubench: benchmark AI-factory services from pytest (``--ubench-recipe``) or ``ubenchai``.

The public API is imported on first use: a pytest run that loads the plugin but benchmarks nothing does
not pay for the load engine, the protocols and the orchestrators.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from loguru import logger as _logger

from ._version import __version__

if TYPE_CHECKING:
    from .load.engine import LoadPlan, Run
    from .load.routing import Target
    from .metrics.results import CaseResult
    from .metrics.slo import SLO, Verdict
    from .orchestrators.base import Deployment, Endpoint, Orchestrator, ServiceError, ServiceState
    from .recipes.loader import LoadedRecipe, RecipeError
    from .recipes.loader import load as load_recipe
    from .recipes.sweep import Case, expand
    from .session import BenchmarkRun, RunOptions, Services, TargetUnreachable, run_case

_logger.disable("pytest_ubench")  # a library is silent until the CLI or plugin configures logging

_WHERE = {
    "LoadPlan": "load.engine", "Run": "load.engine", "Target": "load.routing",
    "CaseResult": "metrics.results", "SLO": "metrics.slo", "Verdict": "metrics.slo",
    "Deployment": "orchestrators.base", "Endpoint": "orchestrators.base", "Orchestrator": "orchestrators.base",
    "ServiceError": "orchestrators.base", "ServiceState": "orchestrators.base",
    "LoadedRecipe": "recipes.loader", "RecipeError": "recipes.loader", "load_recipe": "recipes.loader:load",
    "Case": "recipes.sweep", "expand": "recipes.sweep",
    "BenchmarkRun": "session", "RunOptions": "session", "Services": "session", "TargetUnreachable": "session",
    "run_case": "session",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'pytest_ubench' has no attribute {name!r}")
    module, _, attr = _WHERE[name].partition(":")
    return getattr(import_module(f".{module}", __name__), attr or name)


__all__ = [
    "SLO",
    "BenchmarkRun",
    "Case",
    "CaseResult",
    "Deployment",
    "Endpoint",
    "LoadPlan",
    "LoadedRecipe",
    "Orchestrator",
    "RecipeError",
    "Run",
    "RunOptions",
    "ServiceError",
    "ServiceState",
    "Services",
    "Target",
    "TargetUnreachable",
    "Verdict",
    "__version__",
    "expand",
    "load_recipe",
    "run_case",
]
