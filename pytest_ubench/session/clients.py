"""Load clients as a Slurm job: N nodes x M processes share a case's load; their records are merged
exactly (percentiles over the union of requests, never averages of per-task percentiles).

Each task (``pytest_ubench.session.worker``) writes its records relative to its own clock start and that
start's wall-clock time, and measures its clock against the harness's (:mod:`..load.clock`) before and
after. Merging puts each task's start on the harness's clock and shifts every task onto the earliest
start, so the throughput window and the per-second series line up across nodes whatever their clocks
say, within each task's measured bound (a few tenths of a millisecond on a cluster's network).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from loguru import logger

from ..load import clock, engine
from ..metrics.columns import Records
from ..metrics.record_files import read_case
from ..orchestrators.base import Orchestrator, ServiceError
from ..recipes.sweep import Case


def _correction(meta: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """What to add to a task's clock to read the harness's, and what the results say of it."""
    measured = (meta.get("clock") or {}).get("start")
    said: dict[str, Any] = {"task": meta["task"], "node": meta.get("node")}
    if not isinstance(measured, dict):
        reason = measured or "no time server was given"
        logger.warning("client task {} on {}: clock not measured ({}); merged on its own clock",
                       meta["task"], meta.get("node"), reason)  # fmt: skip
        return 0.0, said | {"offset_ms": None, "error_ms": None, "drift_ms": None, "note": reason}
    end = (meta.get("clock") or {}).get("end")
    drift = (end["offset_s"] - measured["offset_s"]) * 1000 if isinstance(end, dict) else None
    return measured["offset_s"], said | {
        "offset_ms": measured["offset_s"] * 1000,
        "error_ms": measured["error_s"] * 1000,
        "drift_ms": drift,
    }


def merge(out_dir: Path) -> engine.Run:
    """One run from every task's records, on the harness's clock, from the earliest task's start."""
    metas = [(p.parent, json.loads(p.read_text(encoding="utf-8"))) for p in sorted(out_dir.glob("task-*/run.json"))]
    started = [(d, m, *_correction(m)) for d, m in metas if m["records"]]
    if not started:
        raise ServiceError(f"no load-client task wrote any record under {out_dir}")
    base = min(m["wall_t0"] + fix for _, m, fix, _ in started)
    parts: list[Records] = []
    starts, ends = [], []
    lost: dict[int, float] = {}
    for task_dir, meta, fix, _ in started:
        offset = meta["wall_t0"] + fix - base
        parts.append(read_case(task_dir).shifted(offset))
        starts.append(meta["window_start"] + offset)
        ends.append(meta["window_end"] + offset)
        for k, at in meta.get("lost", {}).items():
            lost[int(k)] = min(at + offset, lost.get(int(k), math.inf))
    records = Records.concat(parts, 0.0).sorted()
    aborted = next((m["aborted"] for _, m in metas if m["aborted"]), None)
    wall_t1 = max(m["wall_t1"] + fix for _, m, fix, _ in started)
    clocks = [said for *_, said in started]
    return engine.Run(records, 0.0, base, min(starts), max(ends), wall_t1=wall_t1, aborted=aborted, clocks=clocks,
                      lost=dict(sorted(lost.items())))  # fmt: skip


def run(
    case: Case, endpoint_file: Path, out_dir: Path, orch: Orchestrator, progress: engine.Progress | None = None
) -> engine.Run:
    """Submit the client job, wait for it, merge its tasks' records. Ctrl-C cancels it and keeps the records."""
    out_dir = out_dir.absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = out_dir / "recipe.json"
    saved.write_text(json.dumps({"path": str(case.loaded.path), "data": case.loaded.data}), encoding="utf-8")
    with clock.TimeServer() as times:
        worker = [sys.executable, "-m", "pytest_ubench.session.worker", "--recipe-json", str(saved), "--case",
                  case.id, "--repeat", str(case.repeat), "--endpoint", str(endpoint_file.absolute()),
                  "--out", str(out_dir), "--clock", times.address]  # fmt: skip
        try:
            submit_and_wait(case, worker, out_dir, orch, progress)
        except KeyboardInterrupt:
            result = merge(out_dir)
            result.aborted = "interrupted"
            return result
    return merge(out_dir)


def submit_and_wait(
    case: Case, command: list[str], out_dir: Path, orch: Orchestrator, progress: engine.Progress | None = None
) -> None:
    """The case's client job (``clients.nodes`` x ``clients.tasks_per_node`` tasks each running ``command``),
    to its end; progress sees the time it has run against the case's warm-up and duration."""
    w = case.recipe.workload
    total = w.warmup_s + w.duration_s

    def tick(elapsed: float) -> None:
        if progress is not None:
            progress(engine.Snapshot(min(elapsed, total), total, 0, 0, 0, 0))

    orch.run_tasks(case.id, f"ubench-clients-{case.recipe.name}", w.clients, command, out_dir, tick)
