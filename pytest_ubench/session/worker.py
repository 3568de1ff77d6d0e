"""One load-client process of a distributed run (a Slurm task): its share of a case's load, its own
records, and the clock reference that lets the parent merge every task's records exactly.

    python -m pytest_ubench.session.worker --recipe-json R --case ID --endpoint E --out DIR

The task index and count come from ``SLURM_PROCID``/``SLURM_NTASKS``. Closed loop splits the users
(the first ``c % n`` tasks take one more), open loop deals out the one schedule (``parallel.task_plan``),
so the union is the case's load. SIGTERM (``scancel``) ends the run like Ctrl-C: what was measured is kept.
``--clock HOST:PORT``: the harness's time server, asked before and after the run (:mod:`..load.clock`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

from ..load import clock, engine, routing
from ..load.parallel import idle, task_plan
from ..metrics.columns import Records
from ..metrics.files import write_json
from ..metrics.record_files import PARTS, keep
from ..orchestrators.base import Endpoint
from ..recipes.loader import LoadedRecipe
from ..recipes.schema import Recipe
from ..recipes.sweep import expand
from .plans import plan_for


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pytest_ubench.session.worker")
    ap.add_argument("--recipe-json", type=Path, required=True)
    ap.add_argument("--case", required=True)
    ap.add_argument("--repeat", type=int, default=0, help="which run of the case (its own prompts)")
    ap.add_argument("--endpoint", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--clock", help="HOST:PORT of the harness's time server")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    index, count = int(os.environ.get("SLURM_PROCID", "0")), int(os.environ.get("SLURM_NTASKS", "1"))

    saved = json.loads(args.recipe_json.read_text(encoding="utf-8"))
    loaded = LoadedRecipe(Recipe.model_validate(saved["data"]), Path(saved["path"]), saved["data"])
    case = replace(next(c for c in expand(loaded) if c.id == args.case), repeat=args.repeat)
    endpoint = Endpoint.read(args.endpoint)
    planned = plan_for(case, endpoint).plan
    if not isinstance(planned, engine.LoadPlan):  # a tool-driven protocol runs its own tasks
        raise SystemExit(f"{case.id}: protocol {case.recipe.workload.protocol} does not run as a load-client task")
    plan = task_plan(planned, index, count)
    out = args.out / f"task-{index}"
    out.mkdir(parents=True, exist_ok=True)
    before = _clock(args.clock)
    if idle(plan):
        run = engine.Run(Records.empty(), 0.0, 0.0, 0.0, 0.0)  # more tasks than users: this one has nothing to do
    else:
        plan = replace(plan, spill_dir=out / PARTS)
        run = engine.run([routing.Target.of_url(url) for url in endpoint.load_urls], plan)
    after = _clock(args.clock)
    keep(out, run.records, {"wall_t0": run.wall_t0, "case_id": case.id, "task": index})
    write_json(
        out / "run.json",
        {
            "task": index,
            "tasks": count,
            "node": os.environ.get("SLURMD_NODENAME"),
            "wall_t0": run.wall_t0,
            "wall_t1": run.wall_t1,
            "window_start": run.window_start - run.t0,
            "window_end": run.window_end - run.t0,
            "aborted": run.aborted,
            "records": len(run.records),
            "lost": {str(k): at for k, at in run.lost.items()},
            "clock": {"start": before, "end": after},
        },
    )
    return 130 if run.aborted == "interrupted" else 0


def _clock(address: str | None) -> dict[str, float] | str | None:
    """The offset to the harness's clock, or why it is unknown (the merge then trusts this clock)."""
    if address is None:
        return None
    try:
        found = clock.offset(address)
    except clock.ClockError as exc:
        return str(exc)
    return {"offset_s": found.offset_s, "error_s": found.error_s}


if __name__ == "__main__":
    sys.exit(main())
