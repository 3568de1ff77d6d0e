"""The load engine: closed and open loop on one asyncio event loop, every request recorded.

Open loop measures latency from each request's *intended* send time and records how late the
actual send was (``send_lag_ms``), so neither a slow server nor a slow client can hide queueing
(coordinated omission). Requests still in flight when the load window closes are awaited and
counted, never cancelled: the client's count must match what the server did.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter, time
from typing import Any, Protocol

import numpy as np
from loguru import logger

from ..metrics.client_check import ClientHealth, sample_health
from ..metrics.columns import Collector, Records
from ..metrics.live import Live
from ..metrics.record_files import Parts
from ..metrics.records import Record
from ..orchestrators.base import ServiceError
from .http import BodySink, Connection, RequestFailed
from .responses import set_frame_limit, sink_for
from .routing import Router, Target, Targets
from .schedule import Schedule, arrivals, build


@dataclass(frozen=True)
class LoadPlan:
    """What to send and how; built from a recipe case, free of any recipe types."""

    requests: Sequence[bytes]  # fully serialised HTTP requests, used round-robin
    stream: bool
    mode: str  # "closed" | "open"
    concurrency: int = 1
    rate: float = 1.0
    arrival: str = "poisson"
    burstiness: float = 1.0  # gamma shape
    seed: int = 0
    schedule: Schedule | None = None  # open loop: given (ramps, bursts, traces), else drawn from rate
    max_in_flight: int | None = None  # open loop: arrivals beyond it are dropped (recorded, not sent)
    saturated_in_flight: int | None = None  # open loop: stop early once this many wait (clearly saturated)
    # How responses are read (embeddings, plain HTTP); default: OpenAI completions, streamed or not.
    sink: Callable[[Record], Sink] | None = None
    # A protocol that is not HTTP (a database, a cache): its client makes the calls, ``requests`` is unused.
    adapter: Callable[[], Adapter] | None = None
    duration_s: float = 10.0
    warmup_s: float = 0.0
    max_requests: int | None = None
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 120.0
    drain_timeout_s: float | None = None  # default: request_timeout_s
    max_frame_bytes: int = 4 << 20  # a streamed frame or JSON body beyond it is given up (memory stays bounded)
    setup_timeout_s: float = 600.0  # an adapter's connect and preload, before the clock starts
    # Over several targets (a service's replicas): the one with fewest requests outstanding here (ties in
    # turn), each in turn, or one drawn at random (seeded).
    routing: str = "least-outstanding"
    # Where finished requests go in blocks as the run goes (memory stays flat; a killed run keeps them);
    # None: kept in memory (short runs, tests).
    spill_dir: Path | None = None
    # Every this many seconds: the records so far to disk (with spill_dir) and the figures so far to the
    # run's ``checkpoint`` callback; 0: never.
    checkpoint_s: float = 60.0


class Adapter(Protocol):
    """A protocol spoken through its ecosystem's client library (redis, psycopg, ...).

    ``open`` connects and prepares (preloads keys, creates tables) before the run's clock starts and
    raises ``ServiceError`` with a clear message when it cannot (wrong password, missing table).
    ``call`` makes request ``index`` and fills ``rec`` (``op``, ``items``, ``nbytes``, ``first`` where it
    means something); the engine times it and raises ``RequestFailed(kind)`` for known failures.
    """

    async def open(self, connections: int) -> None: ...

    async def call(self, rec: Record, index: int) -> None: ...

    async def close(self) -> None: ...


class Sink(BodySink, Protocol):
    """Reads one response as it arrives and judges it when it is complete."""

    def finish(self) -> None: ...


@dataclass
class Run:
    """Everything one load run produced; times are ``perf_counter`` seconds (the records' are after ``t0``)."""

    records: Records
    t0: float
    wall_t0: float
    window_start: float
    window_end: float
    wall_t1: float = 0.0
    aborted: str | None = None

    # The client's own health, sampled while it ran (one entry per client process).
    client: list[ClientHealth] = field(default_factory=list)
    # Client tasks on other nodes: each one's clock against the harness's, as the merge corrected it.
    clocks: list[dict[str, Any]] = field(default_factory=list)
    # Replicas found dead (a refused connection): index -> seconds after ``t0``. Their requests went to the
    # others from then on; those in flight on them failed as ``replica_lost``.
    lost: dict[int, float] = field(default_factory=dict)

    @property
    def measured(self) -> Records:
        return self.records.measured


def schedule_of(plan: LoadPlan) -> Schedule:
    """The open-loop arrivals of a plan: given, or drawn from its rate; cut to ``max_requests``."""
    sched = plan.schedule
    if sched is None:
        total = plan.warmup_s + plan.duration_s
        sched = build(arrivals(plan.rate, total, plan.arrival, plan.seed, plan.burstiness))
    return sched if plan.max_requests is None else sched.head(plan.max_requests)


@dataclass(frozen=True)
class Snapshot:
    """A live view of a run for progress displays."""

    elapsed: float
    total: float
    sent: int
    completed: int
    failed: int
    in_flight: int
    dropped: int = 0
    target_rate: float | None = None  # open loop
    rate: float = 0.0  # completions per second over the last second or so
    ttft_p50_ms: float | None = None  # over the measured requests so far (a running histogram: within 1 %)
    ttft_p95_ms: float | None = None


Progress = Callable[[Snapshot], None]
# Called every ``checkpoint_s`` with the figures so far and the seconds since the measured window opened.
Checkpoint = Callable[[Live, float], None]


class Observer(Protocol):
    """Reads a running engine from outside (e.g. a metrics exporter's thread); never called per request."""

    def attach(self, engine: Any) -> None: ...

    def detach(self) -> None: ...


# A dead target makes every request fail at once; hammering it for the rest of the run would only
# fill the records with thousands of identical failures, so the run stops after this many in a row.
UNREACHABLE_AFTER = 50


class _Engine:
    def __init__(self, targets: Sequence[Target], plan: LoadPlan, spill_prefix: str = "part") -> None:
        self.plan = plan
        spill = Parts(plan.spill_dir, spill_prefix) if plan.spill_dir is not None else None
        self.collector = Collector(0.0, spill)  # its t0 is set when the run starts, before any request
        self.router = Router(targets, plan.routing, plan.seed, plan.connect_timeout_s, self.collector.add)
        self.sent = 0
        self.live = Live()  # the figures so far, folded from the collector's rows
        self.follower = self.collector.follow(self._fold)
        self.counter = itertools.count()  # closed loop: the next request's index
        self.adapter: Adapter | None = None
        self.completed = 0
        self.failed = 0
        self.dropped = 0
        self.spin = 0.0  # seconds spent polling for precise send times (idle, not load)
        self.health = ClientHealth()
        self.schedule: Schedule | None = None  # open loop, once drawn
        self.loop = asyncio.get_running_loop()
        self.in_flight: dict[Connection, float] = {}  # connection -> send time of its request
        self.refused = 0  # connection failures since the last success
        self.stopped: str | None = None  # why the run stopped issuing requests early
        self.exhausted = False  # max_requests were all sent before the duration ran out

    async def one(self, rec: Record, index: int) -> None:
        self.sent += 1
        try:
            if self.adapter is not None:
                await self._call(self.adapter, rec, index)
            else:
                sink = self.plan.sink(rec) if self.plan.sink is not None else sink_for(self.plan.stream, rec)
                await self._exchange(rec, sink, self.plan.requests[index % len(self.plan.requests)])
                try:
                    sink.finish()
                except Exception:  # a reply no reader foresaw: one failed request, never a traceback
                    rec.error = "malformed_response"
        except RequestFailed as exc:
            rec.end = perf_counter()
            rec.error = exc.kind
        except asyncio.CancelledError:
            rec.end = perf_counter()
            rec.error = "interrupted"  # cut short by Ctrl-C: recorded, never counted as a success
            self.collector.add(rec)
            raise
        if not self.router.holds(rec):  # one held waits for its replica's fate, then comes in
            self.collector.add(rec)
        if rec.error is None:
            self.completed += 1
            self.refused = 0
        else:
            self.failed += 1
            if rec.error == "connect":
                self.refused += 1
                if self.refused >= UNREACHABLE_AFTER and self.stopped is None:
                    self.stopped = f"target unreachable: {self.refused} connection attempts in a row failed"

    async def _call(self, adapter: Adapter, rec: Record, index: int) -> None:
        rec.start = perf_counter()
        try:
            async with asyncio.timeout(self.plan.request_timeout_s):
                await adapter.call(rec, index)
        except TimeoutError:
            raise RequestFailed("timeout") from None
        except (RequestFailed, asyncio.CancelledError):
            raise
        except Exception as exc:  # a client library's own error: recorded by its name, never a traceback
            raise RequestFailed(type(exc).__name__, str(exc)) from None
        rec.end = perf_counter()

    async def _exchange(self, rec: Record, sink: Sink, payload: bytes) -> None:
        """Send once; resend once, on a new connection, if a reused keep-alive connection was closed under
        us; over replicas, go to another one when this one refuses the connection (it has died).

        Servers (llama.cpp's among them) may close an idle keep-alive connection just as it is
        reused; no byte of the response has arrived then, so the request was never served. The resend
        takes no idle connection: another one closed the same way would fail it too (the one way found
        for a request a CI run lost over two llama.cpp replicas).
        """
        router = self.router
        k = router.route()
        resent = False
        while True:
            pool = router.pools[k]
            rec.replica = k
            try:
                conn = (None if resent else pool.take()) or await pool.connect()
            except RequestFailed as exc:
                if (k := router.failover(k, str(exc))) >= 0:
                    continue
                raise
            reused = conn.served > 0
            if rec.start != rec.start:  # NaN: the first send
                rec.start = perf_counter()
            done = conn.send(payload, sink)
            self.in_flight[conn] = rec.start
            router.outstanding[k] += 1
            try:
                rec.end = await done
                router.served(k)
                return
            except RequestFailed as exc:
                if exc.kind in ("disconnected", "connection_closed") and reused and rec.status == 0 and not resent:
                    resent = True
                    if pool.reuse:
                        pool.stop_reusing()
                        logger.info("server closed a reused keep-alive connection: one connection per request now")
                    continue
                raise router.broken(k, rec, exc) from None
            finally:
                del self.in_flight[conn]
                router.outstanding[k] -= 1
                pool.release(conn)

    async def enforce_timeouts(self) -> None:
        """One sweeper instead of a timer per request: timers cost ~12 % of the hot path."""
        timeout = self.plan.request_timeout_s
        tick = min(0.05, timeout / 10)
        while True:
            await asyncio.sleep(tick)
            limit = perf_counter() - timeout
            for conn, started in list(self.in_flight.items()):
                if started <= limit:
                    conn.abort("timeout")

    async def closed(self, t0: float, stop_at: float, measure_from: float) -> None:
        budget = itertools.count() if self.plan.max_requests is None else iter(range(self.plan.max_requests))

        async def user() -> None:
            while (now := perf_counter()) < stop_at and self.stopped is None:
                if next(budget, None) is None:
                    self.exhausted = True
                    return
                await self.one(Record(now, warmup=now < measure_from), next(self.counter))

        await asyncio.gather(*(user() for _ in range(self.plan.concurrency)))

    async def open(self, t0: float, stop_at: float, measure_from: float) -> None:
        plan = self.plan
        sched = self.schedule = schedule_of(plan)
        cap = plan.max_in_flight if plan.max_in_flight is not None else -1
        saturated = plan.saturated_in_flight if plan.saturated_in_flight is not None else -1
        tasks: set[asyncio.Task[None]] = set()
        sleep = asyncio.sleep
        for offset, idx in sched.pairs():
            if self.stopped is not None:
                break
            intended = t0 + offset
            delay = intended - perf_counter()
            if delay > 0.001:
                # The loop's timers wake up to 1 ms late (epoll rounds up to whole milliseconds), so
                # sleep to 1 ms before the send time, then yield to the loop until it is reached:
                # responses keep being handled meanwhile, at the cost of polling for <= 1 ms.
                await sleep(delay - 0.001)
            if (now := perf_counter()) < intended:
                while perf_counter() < intended:
                    await sleep(0)
                self.spin += perf_counter() - now
            if len(tasks) == saturated:
                self.stopped = f"saturated: {saturated} requests in flight at {offset:.1f} s"
                break
            rec = Record(intended, warmup=intended < measure_from)
            if len(tasks) == cap:
                rec.error = "dropped"  # k6's dropped_iterations: the cap left no room to send it on time
                self.collector.add(rec)
                self.dropped += 1
                continue
            task = self.loop.create_task(self.one(rec, idx))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        self.exhausted = self.stopped is None and plan.max_requests == len(sched.offsets)

    def _scheduled_rate(self, elapsed: float) -> float | None:
        """Arrivals the schedule holds for the last second: the rate the run should be delivering."""
        if self.schedule is None:
            return None
        lo, hi = np.searchsorted(self.schedule.offsets, [max(0.0, elapsed - 1.0), elapsed])
        return float(hi - lo) / min(1.0, elapsed) if elapsed > 0 else None

    def _fold(self, rows: np.ndarray, chunk_us: np.ndarray) -> None:
        self.live.fold(rows, chunk_us, list(self.collector.codes["error"]))

    def snapshot(self, elapsed: float, total: float, prev: tuple[float, int]) -> Snapshot:
        self.collector.catch_up(self.follower)
        p50, p95 = self.live.quantile_ms("ttft_ms", 50), self.live.quantile_ms("ttft_ms", 95)
        done = self.completed + self.failed
        dt = elapsed - prev[0]
        return Snapshot(
            elapsed,
            total,
            self.sent,
            self.completed,
            self.failed,
            len(self.in_flight),
            self.dropped,
            self._scheduled_rate(elapsed),
            (done - prev[1]) / dt if dt > 0 else 0.0,
            p50,
            p95,
        )


async def run_async(
    target: Targets,
    plan: LoadPlan,
    progress: Progress | None = None,
    observer: Observer | None = None,
    start: Callable[[], float] | None = None,
    spill_prefix: str = "part",
    checkpoint: Checkpoint | None = None,
) -> Run:
    """``start``: called once this process is set up (its adapter connected and preloaded), returns the
    ``perf_counter`` time to start at, so client processes on one host (one monotonic clock) share a start
    after every one's setup, and their records merge exactly; ``spill_prefix`` names this process's
    blocks in ``plan.spill_dir`` (several processes share it)."""
    engine = _Engine([target] if isinstance(target, Target) else list(target), plan, spill_prefix)
    set_frame_limit(plan.max_frame_bytes)
    if plan.adapter is not None:  # connect and prepare before the clock starts: setup is not load
        engine.adapter = plan.adapter()
        try:
            async with asyncio.timeout(plan.setup_timeout_s):
                await engine.adapter.open(plan.concurrency if plan.mode == "closed" else (plan.max_in_flight or 64))
        except TimeoutError:
            await engine.adapter.close()
            raise ServiceError(
                f"the protocol's setup (connect, preload) did not finish within {plan.setup_timeout_s:g} s "
                "(workload.timeouts.setup_s)"
            ) from None
    if observer is not None:
        observer.attach(engine)
    t0 = perf_counter() if start is None else await asyncio.to_thread(start)
    if (wait := t0 - perf_counter()) > 0:
        await asyncio.sleep(wait)
    engine.collector.t0 = t0
    # A full (generation 2) collection walks every record made so far: measured at 10,000 req/s, it
    # stalled the loop for up to 40 ms (send lag p99 18 ms). Objects from before the run are frozen out
    # of collection and full collections are held off until the run ends; young ones still run.
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(thresholds[0], thresholds[1], 1_000_000)
    wall_t0 = time() - (perf_counter() - t0)
    measure_from = t0 + plan.warmup_s
    stop_at = measure_from + plan.duration_s
    run = Run(Records.empty(t0), t0, wall_t0, measure_from, stop_at, client=[engine.health])
    ticker = None
    if progress is not None:

        async def tick() -> None:
            total = plan.warmup_s + plan.duration_s
            prev = (0.0, 0)
            while True:
                elapsed = perf_counter() - t0
                progress(engine.snapshot(elapsed, total, prev))
                prev = (elapsed, engine.completed + engine.failed)
                await asyncio.sleep(0.5)

        ticker = asyncio.create_task(tick())
    sweeper = asyncio.create_task(engine.enforce_timeouts())
    watcher = asyncio.create_task(sample_health(engine.health, lambda: engine.spin))
    checkpoints = None
    if plan.checkpoint_s > 0 and (checkpoint is not None or plan.spill_dir is not None):

        async def every() -> None:
            while True:
                await asyncio.sleep(plan.checkpoint_s)
                engine.collector.spill_now()  # every row so far folded into the figures and handed to disk
                engine.collector.catch_up(engine.follower)
                so_far, at = engine.live.copy(), max(0.0, perf_counter() - measure_from)
                # on disk before a checkpoint counts them: a run killed after it keeps all it counted
                await asyncio.to_thread(engine.collector.settle)
                if checkpoint is not None:
                    checkpoint(so_far, at)

        checkpoints = asyncio.create_task(every())
    driver = engine.closed if plan.mode == "closed" else engine.open
    drain = plan.drain_timeout_s if plan.drain_timeout_s is not None else plan.request_timeout_s
    try:
        await asyncio.wait_for(driver(t0, stop_at, measure_from), plan.warmup_s + plan.duration_s + drain + 5)
    except TimeoutError:
        run.aborted = "in-flight requests did not finish within the drain timeout"
    except asyncio.CancelledError:
        # Ctrl-C: keep what was measured; the caller writes it and re-raises KeyboardInterrupt.
        run.aborted = "interrupted"
    else:
        run.aborted = engine.stopped
        if engine.exhausted and (ended := perf_counter()) < stop_at:
            # The request budget ran out first: the load ended here, and throughput is over the time it
            # took (dividing by the planned duration reported 5 tok/s for a run that made 684).
            run.window_end = max(measure_from, ended)
    finally:
        sweeper.cancel()
        watcher.cancel()
        if checkpoints is not None:
            checkpoints.cancel()
        if observer is not None:
            observer.detach()
        if ticker is not None:
            ticker.cancel()
        engine.router.close()
        run.lost = {k: at - t0 for k, at in engine.router.lost.items()}
        if engine.adapter is not None:
            await engine.adapter.close()
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        run.wall_t1 = time()
        run.records = engine.collector.finish()
    logger.debug("load finished: {} requests, {} failed", len(run.records), engine.failed)
    return run


def run(
    target: Targets,
    plan: LoadPlan,
    progress: Progress | None = None,
    observer: Observer | None = None,
    start: Callable[[], float] | None = None,
    spill_prefix: str = "part",
    checkpoint: Checkpoint | None = None,
) -> Run:
    """Run a load plan on a fresh event loop (one loop per process; uvloop's where installed)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(run_async(target, plan, progress, observer, start, spill_prefix, checkpoint))


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed, unless ``UBENCHAI_LOOP=asyncio`` asks for the standard loop."""
    if os.environ.get("UBENCHAI_LOOP") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
