"""Several load-client processes on one host, so the client is not the bottleneck.

Each process runs its own event loop on its share of the plan: closed loop splits the users, open loop
deals out the one schedule drawn for the whole run (arrival i goes to process i mod n), so the union
is exactly the single-process load. All processes start at one ``perf_counter`` instant: on one host
that clock is the system's monotonic clock, so their records merge by plain concatenation, with no
shifting, and every figure is computed over the union as if one process had measured it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
from dataclasses import replace
from multiprocessing.connection import Connection
from queue import Empty
from time import perf_counter
from typing import Any

from loguru import logger

from ..metrics.columns import Records
from ..metrics.live import Live
from ..orchestrators import watchdog
from ..orchestrators.base import ServiceError
from . import engine, routing


def share(total: int, index: int, count: int) -> int:
    return total // count + (1 if index < total % count else 0)


def task_plan(plan: engine.LoadPlan, index: int, count: int) -> engine.LoadPlan:
    """Process ``index`` of ``count``'s part of the plan; the parts add up to the whole."""
    if plan.mode == "closed":
        max_requests = None if plan.max_requests is None else share(plan.max_requests, index, count)
        return replace(plan, concurrency=share(plan.concurrency, index, count), max_requests=max_requests)
    cap = None if plan.max_in_flight is None else max(1, share(plan.max_in_flight, index, count))
    sched = engine.schedule_of(plan).deal(index, count)
    return replace(plan, schedule=sched, max_requests=None, max_in_flight=cap)


def worker_count(workers: int | str) -> int:
    if workers == "auto":
        return len(os.sched_getaffinity(0))
    return int(workers)


def idle(plan: engine.LoadPlan) -> bool:
    """More processes than users (or arrivals): this one has nothing to do."""
    if plan.mode == "closed":
        return plan.concurrency == 0 or plan.max_requests == 0
    return len(engine.schedule_of(plan)) == 0


STARTUP_TIMEOUT_S = 60.0


def run(
    target: routing.Targets,
    plan: engine.LoadPlan,
    workers: int,
    progress: engine.Progress | None = None,
    checkpoint: engine.Checkpoint | None = None,
) -> engine.Run:
    """Run ``plan`` on ``workers`` processes and merge their records (and, at each checkpoint, their
    figures so far)."""
    if workers <= 1:
        return engine.run(target, plan, progress, checkpoint=checkpoint)
    ctx = mp.get_context("spawn")  # fresh interpreters: nothing inherited from the parent's threads or loop
    queue: Any = ctx.Queue()
    pipes, procs = [], []
    for i in range(workers):
        parent_end, child_end = ctx.Pipe()
        p = ctx.Process(target=_child, args=(i, target, task_plan(plan, i, workers), child_end, queue), daemon=True)
        p.start()
        assert p.pid is not None
        watchdog.guard_process(p.pid)  # a client process never outlives the harness, even one killed
        pipes.append(parent_end)
        procs.append(p)
    runs: dict[int, engine.Run] = {}
    snapshots: dict[int, engine.Snapshot] = {}
    so_far: dict[int, tuple[Live, float]] = {}
    interrupted = False
    try:
        _await_ready(queue, procs, STARTUP_TIMEOUT_S + plan.setup_timeout_s)
        start_at = perf_counter() + 0.05
        for conn in pipes:
            conn.send(start_at)
        while len(runs) < workers:
            try:
                kind, index, payload = queue.get(timeout=0.5)
            except Empty:
                dead = [i for i, p in enumerate(procs) if not p.is_alive() and i not in runs]
                if dead:
                    raise ServiceError(f"load client process(es) {dead} died without results") from None
                continue
            except KeyboardInterrupt:
                interrupted = True
                _interrupt(procs)
                continue
            if kind == "progress" and progress is not None:
                snapshots[index] = payload
                progress(_combine(list(snapshots.values())))
            elif kind == "checkpoint" and checkpoint is not None:
                so_far[index] = (pickle.loads(payload[0]), payload[1])
                every = Live()
                for live, _ in so_far.values():
                    every.add(live)
                checkpoint(every, max(at for _, at in so_far.values()))
            elif kind == "done":
                runs[index] = payload
            elif kind == "error":
                _interrupt(procs)
                raise ServiceError(f"load client process {index}: {payload}")
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
            if p.pid is not None:
                watchdog.release_process(p.pid)
    merged = merge(list(runs.values()), plan)
    if interrupted:
        merged.aborted = "interrupted"
    return merged


def _await_ready(queue: Any, procs: list[Any], timeout_s: float) -> None:
    """Until every process is set up (started, its adapter connected and preloaded): the clock starts
    after the slowest setup, never during one (a preload of 17 MiB objects that outlasted a 3 s window
    once left a process no request in it)."""
    ready, deadline = 0, perf_counter() + timeout_s
    while ready < len(procs):
        try:
            kind, index, payload = queue.get(timeout=0.5)
        except Empty:
            if any(not p.is_alive() for p in procs) or perf_counter() > deadline:
                raise ServiceError("a load client process failed to start") from None
            continue
        if kind == "error":  # its setup failed: its message, and the others need not wait for a start
            for p in procs:
                p.kill()
            raise ServiceError(f"load client process {index}: {payload}")
        ready += kind == "ready"


def _interrupt(procs: list[Any]) -> None:
    """Ctrl-C reaches the whole process group; SIGTERM or ``client stop`` only this process."""
    for p in procs:
        if p.is_alive() and p.pid is not None:
            os.kill(p.pid, signal.SIGINT)


def _child(index: int, target: routing.Targets, plan: engine.LoadPlan, conn: Connection, queue: Any) -> None:
    def start() -> float:
        """Set up: say so, and start when the parent says every process is."""
        queue.put(("ready", index, None))
        return float(conn.recv())

    if idle(plan):
        start_at = start()
        end = start_at + plan.warmup_s + plan.duration_s
        run = engine.Run(Records.empty(start_at), start_at, 0.0, start_at + plan.warmup_s, end)
    else:
        try:
            run = engine.run(
                target,
                plan,
                lambda snap: queue.put(("progress", index, snap)),
                start=start,
                spill_prefix=f"proc{index}",
                # pickled here: the queue's feeder thread would pickle it later, while it changes
                checkpoint=lambda live, at: queue.put(("checkpoint", index, (pickle.dumps(live), at))),
            )
        except ServiceError as exc:  # e.g. an adapter that cannot connect: its message, not "died"
            queue.put(("error", index, str(exc)))
            return
    queue.put(("done", index, run))


def merge(runs: list[engine.Run], plan: engine.LoadPlan) -> engine.Run:
    """One run from runs that share a start instant on one clock: records in intended-time order."""
    active = [r for r in runs if r.wall_t0 > 0] or runs
    first = active[0]
    records = Records.concat([r.records for r in runs], first.t0).sorted()
    aborted = next((r.aborted for r in runs if r.aborted), None)
    merged = engine.Run(
        records,
        first.t0,
        min(r.wall_t0 for r in active),
        first.window_start,
        max(r.window_end for r in active),  # earlier than planned where a request budget ran out
        wall_t1=max(r.wall_t1 for r in active),
        aborted=aborted,
        client=[h for r in runs for h in r.client],
        lost=lost_replicas(runs),
    )
    logger.debug("merged {} client processes: {} records", len(runs), len(records))
    return merged


def lost_replicas(runs: list[engine.Run]) -> dict[int, float]:
    """Each replica any client process found dead, when the first one did (seconds after the shared start)."""
    lost: dict[int, float] = {}
    for r in runs:
        for k, at in r.lost.items():
            lost[k] = min(at, lost.get(k, at))
    return dict(sorted(lost.items()))


def _combine(snaps: list[engine.Snapshot]) -> engine.Snapshot:
    """Counts add up; running percentiles are the busiest process's (a display, not a result)."""
    busiest = max(snaps, key=lambda s: s.completed)
    targets = [s.target_rate for s in snaps if s.target_rate is not None]
    return engine.Snapshot(
        max(s.elapsed for s in snaps),
        busiest.total,
        sum(s.sent for s in snaps),
        sum(s.completed for s in snaps),
        sum(s.failed for s in snaps),
        sum(s.in_flight for s in snaps),
        sum(s.dropped for s in snaps),
        sum(targets) if targets else None,
        sum(s.rate for s in snaps),
        busiest.ttft_p50_ms,
        busiest.ttft_p95_ms,
    )
