"""The load engine: closed and open loop on one asyncio event loop, every request recorded.

Open loop measures latency from each request's *intended* send time and records how late the
actual send was (``send_lag_ms``), so neither a slow server nor a slow client can hide queueing
(coordinated omission). Requests still in flight when the load window closes are awaited and
counted, never cancelled: the client's count must match what the server did.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter, time
from typing import Any, Protocol

from loguru import logger

from ..metrics.records import Record
from .http import Connection, Pool, RequestFailed, tls_context
from .openai import JsonSink, StreamSink, sink_for
from .schedule import arrivals


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    tls: bool = False  # HTTPS, verified against the system's CA store (SSL_CERT_FILE is honoured)


@dataclass(frozen=True)
class LoadPlan:
    """What to send and how; built from a recipe case, free of any recipe types."""

    requests: Sequence[bytes]  # fully serialised HTTP requests, used round-robin
    stream: bool
    mode: str  # "closed" | "open"
    concurrency: int = 1
    rate: float = 1.0
    arrival: str = "poisson"
    seed: int = 0
    duration_s: float = 10.0
    warmup_s: float = 0.0
    max_requests: int | None = None
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 120.0
    drain_timeout_s: float | None = None  # default: request_timeout_s


@dataclass
class Run:
    """Everything one load run produced; times are ``perf_counter`` seconds."""

    records: list[Record]
    t0: float
    wall_t0: float
    window_start: float
    window_end: float
    wall_t1: float = 0.0
    aborted: str | None = None

    @property
    def measured(self) -> list[Record]:
        return [r for r in self.records if not r.warmup]


Progress = Callable[[float, float, int, int], None]  # elapsed, total, completed, failed


class Observer(Protocol):
    """Reads a running engine from outside (e.g. a metrics exporter's thread); never called per request."""

    def attach(self, engine: Any) -> None: ...

    def detach(self) -> None: ...


# A dead target makes every request fail at once; hammering it for the rest of the run would only
# fill the records with thousands of identical failures, so the run stops after this many in a row.
UNREACHABLE_AFTER = 50


class _Engine:
    def __init__(self, target: Target, plan: LoadPlan) -> None:
        self.plan = plan
        self.pool = Pool(target.host, target.port, plan.connect_timeout_s, tls_context() if target.tls else None)
        self.records: list[Record] = []
        self.payloads = itertools.cycle(plan.requests)
        self.completed = 0
        self.failed = 0
        self.loop = asyncio.get_running_loop()
        self.in_flight: dict[Connection, float] = {}  # connection -> send time of its request
        self.refused = 0  # connection failures since the last success
        self.stopped: str | None = None  # why the run stopped issuing requests early

    async def one(self, rec: Record) -> None:
        self.records.append(rec)
        sink = sink_for(self.plan.stream, rec)
        payload = next(self.payloads)
        try:
            await self._exchange(rec, sink, payload)
            sink.finish()
        except RequestFailed as exc:
            rec.end = perf_counter()
            rec.error = exc.kind
        except asyncio.CancelledError:
            rec.end = perf_counter()
            rec.error = "interrupted"  # cut short by Ctrl-C: recorded, never counted as a success
            raise
        if rec.error is None:
            self.completed += 1
            self.refused = 0
        else:
            self.failed += 1
            if rec.error == "connect":
                self.refused += 1
                if self.refused >= UNREACHABLE_AFTER and self.stopped is None:
                    self.stopped = f"target unreachable: {self.refused} connection attempts in a row failed"

    async def _exchange(self, rec: Record, sink: StreamSink | JsonSink, payload: bytes) -> None:
        """Send once; resend once if a reused keep-alive connection was closed under us.

        Servers (llama.cpp's among them) may close an idle keep-alive connection just as it is
        reused; no byte of the response has arrived then, so the request was never served.
        """
        for attempt in (0, 1):
            conn = self.pool.take() or await self.pool.connect()
            reused = conn.served > 0
            if attempt == 0:
                rec.start = perf_counter()
            done = conn.send(payload, sink)
            self.in_flight[conn] = rec.start
            try:
                rec.end = await done
                return
            except RequestFailed as exc:
                if not (exc.kind == "disconnected" and reused and rec.status == 0 and attempt == 0):
                    raise
                if self.pool.reuse:
                    self.pool.reuse = False
                    logger.info("server closed a reused keep-alive connection: one connection per request from now on")
            finally:
                del self.in_flight[conn]
                self.pool.release(conn)

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
            while (now := perf_counter()) < stop_at and self.stopped is None and next(budget, None) is not None:
                await self.one(Record(now, warmup=now < measure_from))

        await asyncio.gather(*(user() for _ in range(self.plan.concurrency)))

    async def open(self, t0: float, stop_at: float, measure_from: float) -> None:
        plan = self.plan
        offsets = arrivals(plan.rate, stop_at - t0, plan.arrival, plan.seed)
        if plan.max_requests is not None:
            offsets = offsets[: plan.max_requests]
        tasks: set[asyncio.Task[None]] = set()
        sleep = asyncio.sleep
        for offset in offsets.tolist():
            if self.stopped is not None:
                break
            intended = t0 + offset
            delay = intended - perf_counter()
            if delay > 0.001:
                # The loop's timers wake up to 1 ms late (epoll rounds up to whole milliseconds), so
                # sleep to 1 ms before the send time, then yield to the loop until it is reached:
                # responses keep being handled meanwhile, at the cost of polling for <= 1 ms.
                await sleep(delay - 0.001)
            while perf_counter() < intended:
                await sleep(0)
            task = self.loop.create_task(self.one(Record(intended, warmup=intended < measure_from)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)


async def run_async(
    target: Target, plan: LoadPlan, progress: Progress | None = None, observer: Observer | None = None
) -> Run:
    engine = _Engine(target, plan)
    if observer is not None:
        observer.attach(engine)
    t0 = perf_counter()
    wall_t0 = time()
    measure_from = t0 + plan.warmup_s
    stop_at = measure_from + plan.duration_s
    run = Run(engine.records, t0, wall_t0, measure_from, stop_at)
    ticker = None
    if progress is not None:

        async def tick() -> None:
            total = plan.warmup_s + plan.duration_s
            while True:
                progress(perf_counter() - t0, total, engine.completed, engine.failed)
                await asyncio.sleep(0.5)

        ticker = asyncio.create_task(tick())
    sweeper = asyncio.create_task(engine.enforce_timeouts())
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
    finally:
        sweeper.cancel()
        if observer is not None:
            observer.detach()
        if ticker is not None:
            ticker.cancel()
        engine.pool.close()
        run.wall_t1 = time()
    logger.debug("load finished: {} requests, {} failed", len(engine.records), engine.failed)
    return run


def run(target: Target, plan: LoadPlan, progress: Progress | None = None, observer: Observer | None = None) -> Run:
    """Run a load plan on a fresh event loop (one loop per process)."""
    return asyncio.run(run_async(target, plan, progress, observer))
