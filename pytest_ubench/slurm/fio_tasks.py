"""fio on a Slurm allocation: every client task (``clients.nodes`` x ``tasks_per_node``) runs the same
job file at once against the shared directory, on files of its own, and writes its own JSON report;
the reports are merged here (``fio.merge``). How a parallel file system's aggregate bandwidth is
measured: from many nodes at once, not from the login node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..load import engine
from ..orchestrators.base import ServiceError
from ..orchestrators.slurm import SlurmOrchestrator
from ..recipes.sweep import Case
from .clients import submit_and_wait

# Each task's report is named by its rank; fio comes from the node's PATH (a profile's modules).
TASK = 'exec fio --output-format=json --output="$0/task-$SLURM_PROCID.json" "$1"'


def run(
    case: Case, job_file: Path, out_dir: Path, orch: SlurmOrchestrator, progress: engine.Progress | None = None
) -> list[dict[str, Any]]:
    """Every task's fio report (a task that wrote none is named in the error)."""
    out_dir = out_dir.absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    submit_and_wait(case, ["sh", "-c", TASK, str(out_dir), str(job_file.absolute())], out_dir, orch, progress)
    tasks = case.recipe.workload.clients.nodes * case.recipe.workload.clients.tasks_per_node
    reports = []
    for rank in range(tasks):
        path = out_dir / f"task-{rank}.json"
        try:
            text = path.read_text(errors="replace")
            reports.append(json.loads(text[text.find("{") :]))
        except (OSError, ValueError) as exc:
            raise ServiceError(f"{case.id}: fio task {rank} wrote no report at {path}: {exc}") from None
    return reports
