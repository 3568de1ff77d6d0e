"""Turn a recipe into its cases: one per point of the sweep written as lists in ``workload.load`` (and in
the protocol's own part, where it says so: a vector workload's ``search_params``, swept against recall)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from . import registry
from .loader import LoadedRecipe
from .schema import Load, Recipe

SWEEPABLE = ("concurrency", "rate")


@dataclass(frozen=True, repr=False)
class Case:
    """One benchmark point: a recipe with every sweep list resolved to a single value."""

    loaded: LoadedRecipe
    load: Load
    point: dict[str, Any]
    # Which run of the point against one deployment (``workload.repeat``, a baseline's runs): each draws
    # its own prompts, or a server's prompt cache answers a repeat from the run before (measured on
    # llama.cpp: TTFT 130 ms for a new prompt, 3.5 ms for one it has seen).
    repeat: int = 0

    def __repr__(self) -> str:
        # Short: reports (Allure parameters, assertion messages) show the case, not the whole recipe.
        return f"Case({self.id})"

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe

    @property
    def concurrency(self) -> int:
        """Users of a closed loop; 1 where the load is a rate (what a per-user figure defaults to)."""
        assert not isinstance(self.load.concurrency, list)  # resolved by the sweep
        return self.load.concurrency or 1

    @property
    def replicas(self) -> int:
        """Instances of the service this case runs against (``service.replicas``, swept or not)."""
        service = self.recipe.service
        return int(self.point.get("replicas", service.replica_counts[0] if service is not None else 1))

    @property
    def id(self) -> str:
        """Readable and stable, used as the pytest id and the run-directory name."""
        parts = [self.recipe.name] + [f"{k}={_fmt(v)}" for k, v in self.point.items()]
        return "-".join(parts)

    @property
    def prompt_stream(self) -> str:
        """What a point's prompts are drawn from, with the seed: its own per point and per repeat, the
        same in every session (a fresh rerun's first run sends what the baseline's first run sent)."""
        return self.id if not self.repeat else f"{self.id}#run{self.repeat + 1}"


def _fmt(value: Any) -> str:
    """A point's value as a part of the case id, which names its results directory: nothing but letters,
    digits and ``_.+-`` (a swept string like ``a/b`` becomes ``a_b``)."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)


def expand(loaded: LoadedRecipe) -> list[Case]:
    load = loaded.recipe.workload.load
    service = loaded.recipe.service
    # Replicas first (the outermost loop): the deployment is scaled once per count, not once per case.
    axes: dict[str, Any] = {"replicas": service.replicas} if service is not None and service.replicas != 1 else {}
    # A ramp is one case (its steps are reported inside it), not a sweep axis.
    axes |= {name: v for name in SWEEPABLE if isinstance(v := getattr(load, name), int | float | list)}
    w = loaded.recipe.workload
    axes |= registry.find(w.protocol).sweep_axes(w.part)  # a protocol's own (vector search parameters)
    names = list(axes)
    values = [v if isinstance(v, list) else [v] for v in axes.values()]
    cases = []
    for combo in itertools.product(*values):
        point = dict(zip(names, combo, strict=True))
        cases.append(Case(loaded, load.model_copy(update={k: v for k, v in point.items() if k in SWEEPABLE}), point))
    return cases
