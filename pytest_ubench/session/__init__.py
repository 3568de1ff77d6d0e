"""The run core: one place that runs a case (deploy, healthy, monitor, load, verdict, results), called by
the pytest plugin and the CLI alike."""

from .case import run_case
from .services import Services, TargetUnreachable, stop_shared

__all__ = ["Services", "TargetUnreachable", "run_case", "stop_shared"]
