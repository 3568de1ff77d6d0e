"""The run-level API both faces call (the pytest plugin and ``ubenchai client run``): a benchmark run's
cases, where they deploy, each case run and gated against a baseline, the dry run, and the sweep
summaries written at the end. The faces translate their options into ``RunOptions`` and print.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from loguru import logger

from ..load import engine
from ..metrics import baselines, capacity, compare
from ..metrics.results import CaseResult, ResultsDir, default_output_root
from ..monitor.prometheus import image_for
from ..orchestrators import backends, registry
from ..orchestrators.base import Orchestrator
from ..recipes import loader
from ..recipes.sweep import Case, expand
from . import manager
from .case import run_case
from .services import Services, stop_shared

# Runs of each case when saving a baseline: their spread is what a gate judges a change by (5: with fewer,
# a t-test on run-level figures needs a change of many spreads; see docs/baselines.md).
BASELINE_RUNS = 5
CONFIRM_PROMPTS = 1000  # a confirmation run's prompt stream: past any baseline run's or repeat's


@dataclass(frozen=True)
class RunOptions:
    """What a face's options say about a run (defaults: the current directory's recipes, local processes)."""

    recipes: Sequence[str] = ()
    overrides: Sequence[Path] = ()
    settings: Sequence[loader.Setting] = ()  # --set / --ubench-set, merged after the override files
    recipe_dirs: Sequence[Path] = ()  # searched for recipe names before UBENCHAI_CONFIG_DIR and ./recipes
    output: Path | None = None  # default: ubench-results/<timestamp>
    orchestrator: str | None = None  # default: the cluster profile's, else local
    cluster: str | None = None
    queue_timeout_s: float | None = None  # default: the cluster profile's
    target: str | None = None  # a running service instead of the recipe's own
    baseline: str | None = None  # gate every case against this baseline (name or path)
    save_baseline: str | None = None  # store every case into this baseline
    baseline_runs: int = BASELINE_RUNS

    def __post_init__(self) -> None:
        if self.baseline_runs < 1:
            raise ValueError(f"baseline runs: {self.baseline_runs} is not a count of runs (at least 1)")


def resolve_target(target: str) -> tuple[str, str | None]:
    """A target as the user gave it: a URL, or the id of a service started by ``ubenchai server start``
    (as ``server list`` shows it; its registry entry knows where it runs, locally or on a Slurm node, and
    where its API key is, if it has one). Returns the URL and the key file."""
    if "://" in target:
        return target, None
    try:
        entry = registry.get(target)
    except KeyError:
        known = [e.id for e in registry.all_entries("service")]
        near = difflib.get_close_matches(target, known, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else "; see 'ubenchai server list'"
        raise ValueError(f"target {target!r}: not a URL and no service with that id{hint}") from None
    return entry.endpoint.url, entry.endpoint.key_file


@dataclass(frozen=True)
class Gate:
    """A case against its baseline: ``regressed`` is the failure message of a statistically significant
    regression; ``comparisons`` None when there is no baseline case to compare with."""

    comparisons: list[compare.Comparison] | None = None
    regressed: str | None = None
    saved: Path | None = None
    confirmations: list[list[compare.Comparison]] = field(default_factory=list)  # runs that re-measured a flag


class BenchmarkRun:
    """One run: recipes loaded once up front (a broken one is a ``RecipeError`` naming file, line and
    field), the orchestrator chosen, one results directory."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.root = options.output or default_output_root()
        self.results = ResultsDir(self.root)
        self.orchestrator: Orchestrator = backends.placement(
            options.orchestrator, options.cluster, options.recipe_dirs, options.queue_timeout_s
        )
        self.target: str | None = None
        self.target_key: str | None = None  # the key file of a service started by 'server start'
        if options.target:
            self.target, self.target_key = resolve_target(options.target)
        # A service started by 'server start' may already be scraped by a 'monitor start': read it there.
        self.watching = (
            manager.monitor_watching(options.target) if options.target and "://" not in options.target else None
        )
        if self.watching is not None:
            logger.info("{}: server metrics from monitor {}", options.target, self.watching.monitor)
        self.cases = self.cases_of(options.recipes)

    def cases_of(self, names: Sequence[str]) -> list[Case]:
        """Every case (sweep point) of the named recipes, in order."""
        cases: list[Case] = []
        for name in names:
            loaded = loader.load(name, self.options.overrides, self.options.recipe_dirs, self.options.settings,
                                 target=self.target)  # fmt: skip
            cases += expand(loaded)
        return cases

    def recipe_names(self) -> list[str]:
        """Every benchmark recipe on the search path, as it can be named (the hint when none is)."""
        return [e.ref for e in loader.available(self.options.recipe_dirs) if e.kind == "benchmark"]

    def dry_run(self, loaded: loader.LoadedRecipe) -> str | None:
        """What deploying the recipe's service would run (a command line, a batch script); None when the
        recipe deploys nothing (it names a running service's url, or its protocol needs none)."""
        spec = loaded.recipe.service
        if spec is None or spec.command is None:
            return None
        return self.orchestrator.dry_run(spec, loaded.recipe.name, self.results.service_dir(loaded.recipe.name))

    def images(self) -> list[str]:
        """The container images the run starts from, each once: its services', and its monitoring's where
        the recipe or the cluster profile runs that from images (``monitor.images``, ``monitor_images``)."""
        found: list[str | None] = []
        for recipe in (c.loaded.recipe for c in self.cases):
            if recipe.service is not None and recipe.service.container is not None:
                found.append(recipe.service.container.image)
            if recipe.monitor is not None and recipe.monitor.enabled:
                gpus = recipe.service.resources.gpus if recipe.service is not None else 0
                found += [image_for(self.orchestrator, recipe.monitor, part) for part in recipe.monitor.parts(gpus)]
        return list(dict.fromkeys(i for i in found if i is not None))

    def pull_images(self) -> list[tuple[str, Path]]:
        """Each image pulled (or found) in the placement's image cache, as the deployments would; for
        clusters whose login nodes pull and whose compute nodes have no network, ahead of the run."""
        return [(image, self.orchestrator.pull(image)) for image in self.images()]

    def preflight(self, pull: bool) -> Iterator[str]:
        """What a dry run prints (each recipe's deployment), or with ``pull`` each image pulled and its file."""
        if pull:
            yield from (f"{image} {sif}" for image, sif in self.pull_images())
            return
        for loaded in {c.loaded.recipe.name: c.loaded for c in self.cases}.values():
            if (text := self.dry_run(loaded)) is not None:
                yield f"# --- {loaded.recipe.name} ({self.orchestrator.name}) ---\n{text}"

    def services(self, shared: bool = False) -> Services:
        """``shared``: pytest-xdist workers use one deployment per recipe (``stop_shared`` ends them)."""
        return Services(self.root, self.orchestrator, self.target, shared=shared, watching=self.watching,
                        target_key_file=self.target_key)  # fmt: skip

    def run_case(self, case: Case, services: Services, progress: engine.Progress | None = None) -> CaseResult:
        runs = self.options.baseline_runs if self.options.save_baseline else None
        return run_case(case, services, progress, runs)

    def gate(self, case: Case, result: CaseResult, services: Services, progress: engine.Progress | None = None) -> Gate:
        """The case against ``baseline`` (its comparison recorded in its results), and saved into
        ``save_baseline``, as the options say. A flagged case is measured again on a fresh deployment
        (``regression.confirm`` times) and fails only when every such run is flagged too."""
        comparisons, regressed, saved, confirmations = None, None, None, []
        if self.options.baseline:
            rules = case.recipe.regression
            baseline = baselines.resolve(self.options.baseline)
            gated = baselines.gate(result.run_dir, baseline, rules.thresholds(), rules.alpha, rules.floors())
            if gated is not None:
                comparisons, note = gated
                if note is not None:
                    logger.warning("{}: {}", case.id, note)
                elif compare.regressions(comparisons):
                    confirmations = self._confirm(case, result, services, progress, baseline)
                    tables = "\n--\n".join([compare.table(comparisons)] + [compare.table(c) for c in confirmations])
                    if all(compare.regressions(c) for c in confirmations):  # none asked for: the flag stands
                        said = f", confirmed by {len(confirmations)} more run(s) on a fresh deployment"
                        regressed = (
                            f"{case.id}: regression against the baseline{said if confirmations else ''}\n{tables}"
                        )
                    else:
                        logger.warning("{}: flagged, but a run on a fresh deployment was not: machine noise, not a "
                                       "regression\n{}", case.id, tables)  # fmt: skip
        if self.options.save_baseline:
            saved = baselines.save(result.run_dir, baselines.resolve(self.options.save_baseline))
        return Gate(comparisons, regressed, saved, confirmations)

    def _confirm(
        self, case: Case, result: CaseResult, services: Services, progress: engine.Progress | None, baseline: Path
    ) -> list[list[compare.Comparison]]:
        """The case measured again, each time on a fresh deployment with prompts of its own, and each run
        compared with the baseline; written under ``<case>/confirm/`` and noted in the case's results."""
        rules = case.recipe.regression
        found: list[list[compare.Comparison]] = []
        if not rules.confirm:
            return found
        for i in range(rules.confirm):
            logger.info("{}: flagged against the baseline; measuring it again on a fresh deployment ({}/{})",
                        case.id, i + 1, rules.confirm)  # fmt: skip
            if case.recipe.service is not None:
                services.redeploy(case)
            fresh = replace(case, repeat=CONFIRM_PROMPTS + i)  # prompts no baseline run or repeat sent
            again = run_case(fresh, services, progress, into=result.run_dir / "confirm" / f"run{i + 1}")
            gated = baselines.gate(again.run_dir, baseline, rules.thresholds(), rules.alpha, rules.floors())
            if gated is None:
                break
            found.append(gated[0])
            if not compare.regressions(gated[0]):
                break  # one clean run settles it
        baselines.note_confirmation(result.run_dir, found, rules.confirm)
        return found

    def finish(self, stop_shared_services: bool = False) -> list[capacity.Summary]:
        """At the end (also after Ctrl-C): shared deployments stopped (the pytest-xdist controller), then
        each recipe's sweep summary written from whatever cases were written (``sweeps/``)."""
        if stop_shared_services:
            stop_shared(self.root, self.orchestrator)
        return capacity.summaries(self.root, [c.result for c in self.results.cases()])
