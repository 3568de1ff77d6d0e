"""The one way a case becomes its load, here and in a Slurm client task: its protocol plans it."""

from __future__ import annotations

from .. import protocols
from ..load.planning import PlanError, Planned
from ..orchestrators.base import Endpoint
from ..recipes.sweep import Case


def plan_for(case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
    if case.load.mode == "search":
        raise PlanError(f"{case.id}: a search case is planned probe by probe (session.search)")
    return protocols.get(case.recipe.workload.protocol).plan(case, endpoint, duration_s)
