"""pytest-ubench: benchmark AI-factory services from pytest (``--ubench-recipe``) or ``ubenchai``."""

from loguru import logger as _logger

from ._version import __version__
from .load.engine import LoadPlan, Run, Target
from .metrics.results import CaseResult
from .metrics.slo import SLO, Verdict
from .orchestrators.base import Deployment, Endpoint, Orchestrator, ServiceError, ServiceState
from .recipes.loader import LoadedRecipe, RecipeError, load
from .recipes.sweep import Case, expand
from .session import Services, TargetUnreachable, run_case

_logger.disable("pytest_ubench")  # a library is silent until the CLI or plugin configures logging

__all__ = [
    "SLO",
    "Case",
    "CaseResult",
    "Deployment",
    "Endpoint",
    "LoadPlan",
    "LoadedRecipe",
    "Orchestrator",
    "RecipeError",
    "Run",
    "ServiceError",
    "ServiceState",
    "Services",
    "Target",
    "TargetUnreachable",
    "Verdict",
    "__version__",
    "expand",
    "load",
    "run_case",
]
