"""Turn a recipe into its cases: one per point of the sweep written as lists in ``workload.load`` (and in
a vector workload's ``search_params``: how it searches, swept against recall)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from .loader import LoadedRecipe
from .schema import Load, Recipe

SWEEPABLE = ("concurrency", "rate")


@dataclass(frozen=True, repr=False)
class Case:
    """One benchmark point: a recipe with every sweep list resolved to a single value."""

    loaded: LoadedRecipe
    load: Load
    point: dict[str, Any]

    def __repr__(self) -> str:
        # Short: reports (Allure parameters, assertion messages) show the case, not the whole recipe.
        return f"Case({self.id})"

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe

    @property
    def id(self) -> str:
        """Readable and stable, used as the pytest id and the run-directory name."""
        parts = [self.recipe.name] + [f"{k}={_fmt(v)}" for k, v in self.point.items()]
        return "-".join(parts)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def expand(loaded: LoadedRecipe) -> list[Case]:
    load = loaded.recipe.workload.load
    # A ramp is one case (its steps are reported inside it), not a sweep axis.
    axes: dict[str, Any] = {name: v for name in SWEEPABLE if isinstance(v := getattr(load, name), int | float | list)}
    vector = loaded.recipe.workload.vector
    if vector is not None:
        axes |= {name: v for name, v in vector.search_params.items() if isinstance(v, list)}
    names = list(axes)
    values = [v if isinstance(v, list) else [v] for v in axes.values()]
    cases = []
    for combo in itertools.product(*values):
        point = dict(zip(names, combo, strict=True))
        cases.append(Case(loaded, load.model_copy(update={k: v for k, v in point.items() if k in SWEEPABLE}), point))
    return cases
