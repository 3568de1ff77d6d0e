"""Load clients as a Slurm job: N nodes x M processes share a case's load; their records are merged
exactly (percentiles over the union of requests, never averages of per-task percentiles).

Each task (``pytest_ubench.load.worker``) writes its records relative to its own clock start and that
start's wall-clock time; merging shifts every task onto the earliest start, so the throughput window
and the per-second series line up across nodes to the accuracy of their clocks (NTP: ~1 ms).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from loguru import logger

from ..load import engine
from ..metrics.records import Record, read_jsonl
from ..orchestrators.base import ServiceError
from ..orchestrators.slurm import Backoff, SlurmOrchestrator, cancel_and_wait
from ..recipes.sweep import Case
from . import script
from .runner import SlurmError


def _shift(rec: Record, offset: float) -> Record:
    rec.intended += offset
    rec.start += offset
    rec.end += offset
    rec.first += offset
    rec.chunks = [c + offset for c in rec.chunks]
    return rec


def merge(out_dir: Path) -> engine.Run:
    """One run from every task's records, on the clock of the earliest task."""
    metas = [(p.parent, json.loads(p.read_text(encoding="utf-8"))) for p in sorted(out_dir.glob("task-*/run.json"))]
    started = [m for _, m in metas if m["records"]]
    if not started:
        raise ServiceError(f"no load-client task wrote any record under {out_dir}")
    base = min(m["wall_t0"] for m in started)
    records: list[Record] = []
    starts, ends = [], []
    for task_dir, meta in metas:
        if not meta["records"]:
            continue
        offset = meta["wall_t0"] - base
        records += (_shift(r, offset) for r in read_jsonl(task_dir / "records.jsonl"))
        starts.append(meta["window_start"] + offset)
        ends.append(meta["window_end"] + offset)
    records.sort(key=lambda r: r.intended if not math.isnan(r.intended) else math.inf)
    aborted = next((m["aborted"] for _, m in metas if m["aborted"]), None)
    wall_t1 = max(m["wall_t1"] for m in started)
    return engine.Run(records, 0.0, base, min(starts), max(ends), wall_t1=wall_t1, aborted=aborted)


def run(
    case: Case, endpoint_file: Path, out_dir: Path, orch: SlurmOrchestrator, progress: engine.Progress | None = None
) -> engine.Run:
    """Submit the client job, wait for it, merge its tasks' records. Ctrl-C cancels it and keeps the records."""
    out_dir = out_dir.absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = out_dir / "recipe.json"
    saved.write_text(json.dumps({"path": str(case.loaded.path), "data": case.loaded.data}), encoding="utf-8")
    worker = [sys.executable, "-m", "pytest_ubench.load.worker", "--recipe-json", str(saved), "--case", case.id,
              "--endpoint", str(endpoint_file.absolute()), "--out", str(out_dir)]  # fmt: skip
    try:
        submit_and_wait(case, worker, out_dir, orch, progress)
    except KeyboardInterrupt:
        result = merge(out_dir)
        result.aborted = "interrupted"
        return result
    return merge(out_dir)


def submit_and_wait(
    case: Case, worker: list[str], out_dir: Path, orch: SlurmOrchestrator, progress: engine.Progress | None = None
) -> None:
    """One job of ``clients.nodes`` x ``clients.tasks_per_node`` tasks, each running ``worker``; waits for
    it to end. Ctrl-C (or any error) cancels the job before re-raising: nothing is left queued."""
    w = case.recipe.workload
    text = script.render_clients(
        w.clients,
        job_name=f"ubench-clients-{case.recipe.name}",
        out_dir=out_dir,
        profile=orch.profile,
        worker=worker,
        account=orch.profile.account or os.environ.get("UBENCHAI_SLURM_ACCOUNT"),
    )
    path = out_dir / "clients.sbatch"
    path.write_text(text + "\n", encoding="utf-8")
    try:
        job_id = orch.slurm.submit(path)
    except SlurmError as exc:
        raise ServiceError(f"{case.id}: cannot submit the load clients ({path}): {exc}") from None
    tasks = w.clients.nodes * w.clients.tasks_per_node
    logger.info("{}: client job {} ({} tasks)", case.id, job_id, tasks)
    total = w.warmup_s + w.duration_s
    started: float | None = None
    backoff = Backoff(fast=0.1)
    try:
        while (info := orch.slurm.query(job_id)) is not None and info.active:
            if info.hopeless:
                raise ServiceError(f"{case.id}: client {info.describe()}: the job can never start")
            if info.state == "RUNNING":
                started = started or time.monotonic()
                if progress is not None:
                    elapsed = min(time.monotonic() - started, total)
                    progress(engine.Snapshot(elapsed, total, 0, 0, 0, 0))
            backoff.sleep()
    except BaseException:
        cancel_and_wait(orch.slurm, job_id, orch.stop_timeout_s)
        raise
    final = orch.slurm.final(job_id)
    if final is not None and final.exit_code not in (0, None):
        tail = (
            (out_dir / "clients.log").read_text(errors="replace")[-3000:] if (out_dir / "clients.log").exists() else ""
        )
        raise ServiceError(f"{case.id}: load clients {final.describe()}\n--- {out_dir / 'clients.log'} ---\n{tail}")
