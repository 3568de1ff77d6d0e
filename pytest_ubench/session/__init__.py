"""The run core: one place that runs a case (deploy, healthy, monitor, load, verdict, results) and a run
of cases (``BenchmarkRun``: gate, sweep summaries, dry run), called by the pytest plugin and the CLI."""

from .case import run_case
from .runs import BASELINE_RUNS, BenchmarkRun, Gate, RunOptions
from .services import Services, TargetUnreachable, stop_shared

__all__ = [
    "BASELINE_RUNS",
    "BenchmarkRun",
    "Gate",
    "RunOptions",
    "Services",
    "TargetUnreachable",
    "run_case",
    "stop_shared",
]
