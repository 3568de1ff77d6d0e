"""The run-level API both faces call (the pytest plugin and ``ubenchai client run``): a benchmark run's
cases, where they deploy, each case run and gated against a baseline, the dry run, and the sweep
summaries written at the end. The faces translate their options into ``RunOptions`` and print.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..load import engine
from ..metrics import baselines, capacity, compare
from ..metrics.results import CaseResult, ResultsDir, default_output_root
from ..orchestrators import backends
from ..orchestrators.base import Orchestrator
from ..recipes import loader
from ..recipes.sweep import Case, expand
from .case import run_case
from .services import Services, stop_shared


@dataclass(frozen=True)
class RunOptions:
    """What a face's options say about a run (defaults: the current directory's recipes, local processes)."""

    recipes: Sequence[str] = ()
    overrides: Sequence[Path] = ()
    recipe_dirs: Sequence[Path] = ()  # searched for recipe names before UBENCHAI_CONFIG_DIR and ./recipes
    output: Path | None = None  # default: ubench-results/<timestamp>
    orchestrator: str | None = None  # default: the cluster profile's, else local
    cluster: str | None = None
    target: str | None = None  # a running service instead of the recipe's own
    baseline: str | None = None  # gate every case against this baseline (name or path)
    save_baseline: str | None = None  # store every case into this baseline


@dataclass(frozen=True)
class Gate:
    """A case against its baseline: ``regressed`` is the failure message of a statistically significant
    regression; ``comparisons`` None when there is no baseline case to compare with."""

    comparisons: list[compare.Comparison] | None = None
    regressed: str | None = None
    saved: Path | None = None


class BenchmarkRun:
    """One run: recipes loaded once up front (a broken one is a ``RecipeError`` naming file, line and
    field), the orchestrator chosen, one results directory."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.root = options.output or default_output_root()
        self.results = ResultsDir(self.root)
        self.orchestrator: Orchestrator = backends.placement(options.orchestrator, options.cluster, options.recipe_dirs)
        self.cases = self.cases_of(options.recipes)

    def cases_of(self, names: Sequence[str]) -> list[Case]:
        """Every case (sweep point) of the named recipes, in order."""
        cases: list[Case] = []
        for name in names:
            cases += expand(loader.load(name, self.options.overrides, self.options.recipe_dirs))
        return cases

    def recipe_names(self) -> list[str]:
        """Every recipe on the search path (what runs when none is named)."""
        return [p.stem for p in loader.available(self.options.recipe_dirs)]

    def dry_run(self, loaded: loader.LoadedRecipe) -> str | None:
        """What deploying the recipe's service would run (a command line, a batch script); None when the
        recipe deploys nothing (it names a running service's url, or its protocol needs none)."""
        spec = loaded.recipe.service
        if spec is None or spec.command is None:
            return None
        return self.orchestrator.dry_run(spec, loaded.recipe.name, self.results.service_dir(loaded.recipe.name))

    def services(self, shared: bool = False) -> Services:
        """``shared``: pytest-xdist workers use one deployment per recipe (``stop_shared`` ends them)."""
        return Services(self.root, self.orchestrator, self.options.target, shared=shared)

    def run_case(self, case: Case, services: Services, progress: engine.Progress | None = None) -> CaseResult:
        return run_case(case, services, progress)

    def gate(self, case: Case, result: CaseResult) -> Gate:
        """The case against ``baseline`` (its comparison recorded in its results), and saved into
        ``save_baseline``, as the options say."""
        comparisons, regressed, saved = None, None, None
        if self.options.baseline:
            rules = case.recipe.regression
            baseline = baselines.resolve(self.options.baseline)
            comparisons = baselines.gate(result.run_dir, baseline, rules.thresholds(), rules.alpha)
            if comparisons is not None and compare.regressions(comparisons):
                regressed = f"{case.id}: regression against the baseline\n{compare.table(comparisons)}"
        if self.options.save_baseline:
            saved = baselines.save(result.run_dir, baselines.resolve(self.options.save_baseline))
        return Gate(comparisons, regressed, saved)

    def finish(self, stop_shared_services: bool = False) -> list[capacity.Summary]:
        """At the end (also after Ctrl-C): shared deployments stopped (the pytest-xdist controller), then
        each recipe's sweep summary written from whatever cases were written (``sweeps/``)."""
        if stop_shared_services:
            stop_shared(self.root, self.orchestrator)
        return capacity.summaries(self.root, [c.result for c in self.results.cases()])
