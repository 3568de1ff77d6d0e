"""Key-value load on Redis: GET/SET mixes over a key space, optionally pipelined (several operations per
round trip).

The hot path speaks RESP itself on asyncio protocols, each reply parsed by hiredis (Redis' own parser),
as the HTTP client does with llhttp. redis-py's asyncio client spent ~150 us of CPU an operation, so at 32
connections on a 2-core machine the figures measured its queueing, not Redis: p99 7 to 40 ms from run to
run against 2.6-2.8 ms now; GET/s at 16 connections in one process 10,900 then, 20,600-28,000 now
(benchmarks/perf/protocols_perf.py, beside redis-benchmark).

The operation and key of request ``i`` come from a seeded sequence, so two runs (and the processes of
one run) issue the same operations. Keys are preloaded before the clock starts so GETs hit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ..load.http import RequestFailed, no_delay
from ..load.planning import Planned, adapter_plan
from ..metrics.records import Record
from ..orchestrators.base import Endpoint, ServiceError
from ..recipes.fields import PositiveInt, Strict
from ..recipes.registry import Part
from ..recipes.sweep import Case
from .base import BaseProtocol, secret


def _get_set() -> dict[Literal["get", "set"], float]:
    return {"get": 0.9, "set": 0.1}


class KeyValue(Strict):
    """``protocol: redis``: GET/SET over ``keys`` keys of ``value_bytes`` each; ``pipeline`` operations per
    round trip. The mix gives each operation's share."""

    keys: PositiveInt = 10_000
    value_bytes: PositiveInt = 128
    mix: dict[Literal["get", "set"], Annotated[float, Field(ge=0)]] = Field(default_factory=_get_set)
    pipeline: PositiveInt = 1
    preload: bool = True  # set every key before the run, so GETs hit
    db: Annotated[int, Field(ge=0)] = 0
    password_env: str | None = None  # the environment variable holding the password
    seed: int = 0

    @model_validator(mode="after")
    def _mix_adds_up(self) -> KeyValue:
        if sum(self.mix.values()) <= 0:
            raise ValueError("'mix' needs a positive share for get or set")
        return self


SEQUENCE = 1 << 16  # operations drawn once and cycled
PRELOAD_BATCH = 1000


@dataclass(frozen=True)
class RedisKV:
    """What to do, picklable for worker processes; ``__call__`` makes the adapter inside the run's loop."""

    host: str
    port: int
    keys: int = 10_000
    value_bytes: int = 128
    get_share: float = 0.9
    pipeline: int = 1
    preload: bool = True
    db: int = 0
    password_env: str | None = None  # read when connecting, never stored
    seed: int = 0

    def __call__(self) -> RedisAdapter:
        return RedisAdapter(self)


def key(i: int) -> bytes:
    return b"ubench:%d" % i


def command(*parts: bytes) -> bytes:
    """One command in RESP: an array of bulk strings."""
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)


class ReplyFailed(Exception):
    """Redis answered with an error reply (``-ERR ...``)."""


class Connection(asyncio.Protocol):
    """One connection carrying one request (one command, or a pipeline of them) at a time; its replies
    are handed over together once the last has arrived."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader  # a hiredis.Reader
        self.transport: asyncio.Transport | None = None
        self.open = False
        self._waiter: asyncio.Future[list[Any]] | None = None
        self._want = 0
        self._replies: list[Any] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        self.open = True
        no_delay(transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
            while (reply := self.reader.gets()) is not False:
                self._replies.append(reply)
        except Exception as exc:  # hiredis.ProtocolError: bytes that are not RESP
            self._fail(RequestFailed("malformed_response", str(exc)))
            return
        waiter = self._waiter
        if waiter is None:
            if self._replies:  # a reply nobody asked for: the stream is out of step
                self._fail(RequestFailed("malformed_response", "a reply with no request outstanding"))
            return
        if len(self._replies) >= self._want:
            replies, self._replies, self._waiter = self._replies, [], None
            if not waiter.done():
                waiter.set_result(replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RequestFailed("disconnected", "server closed the connection"))

    def send(self, raw: bytes, replies: int) -> asyncio.Future[list[Any]]:
        assert self.transport is not None and self._waiter is None
        self._want = replies
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return waiter

    def _fail(self, exc: RequestFailed) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()


class RedisAdapter:
    def __init__(self, spec: RedisKV) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        self.gets = (rng.random(SEQUENCE) < spec.get_share).tolist()
        self.keys = rng.integers(0, spec.keys, SEQUENCE).tolist()
        self.value = rng.bytes(spec.value_bytes)
        self._set_tail = b"$%d\r\n%b\r\n" % (len(self.value), self.value)  # a SET's value, encoded once
        self.where = f"redis at {spec.host}:{spec.port}"
        self._reader: Callable[[], Any] | None = None
        self._idle: asyncio.Queue[Connection | None] | None = None  # None: a slot whose connection broke
        self._all: set[Connection] = set()
        self._password: str | None = None

    def _op(self, i: int) -> bytes:
        """Operation ``i`` of the sequence, in RESP."""
        name = key(self.keys[i])
        if self.gets[i]:
            return b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(name), name)
        return b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n" % (len(name), name) + self._set_tail

    async def _connect(self) -> Connection:
        """A new connection, logged in and on the recipe's database (the password, read from the environment
        when the run opens, is held in memory only, for connections made again after one broke)."""
        assert self._reader is not None
        loop = asyncio.get_running_loop()
        reader = self._reader
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Connection(reader()), self.spec.host, self.spec.port), 5.0
            )
        except (OSError, TimeoutError) as exc:
            raise RequestFailed("connect", str(exc) or type(exc).__name__) from None
        self._all.add(conn)
        setup = []
        if self._password is not None:
            setup.append(command(b"AUTH", self._password.encode()))
        if self.spec.db:
            setup.append(command(b"SELECT", b"%d" % self.spec.db))
        if setup:
            replies = await conn.send(b"".join(setup), len(setup))
            if isinstance(replies[0], Exception) and self._password is not None:
                conn.close()
                raise ReplyFailed("authentication failed (check workload.kv.password_env)")
            _check(replies)
        return conn

    async def open(self, connections: int) -> None:
        try:
            import hiredis
        except ImportError:
            raise ServiceError("protocol redis needs hiredis: pip install 'pytest-ubench[redis]'") from None

        self._reader = hiredis.Reader
        self._password = secret(self.spec.password_env, "workload.kv.password_env")
        # Requests beyond the connections (open loop) wait for one: that wait is part of their latency,
        # measured from the intended send time.
        self._idle = asyncio.Queue()
        try:
            first = await self._connect()
            _check(await first.send(command(b"PING"), 1))
            if self.spec.preload:
                for start in range(0, self.spec.keys, PRELOAD_BATCH):
                    stop = min(start + PRELOAD_BATCH, self.spec.keys)
                    sets = b"".join(command(b"SET", key(i), self.value) for i in range(start, stop))
                    _check(await first.send(sets, stop - start))
            self._idle.put_nowait(first)
            for _ in range(max(1, connections) - 1):
                self._idle.put_nowait(await self._connect())
        except RequestFailed as exc:  # "connect: [Errno 111] ...", "disconnected: ..."
            await self.close()
            raise ServiceError(f"{self.where}: {exc}") from None
        except ReplyFailed as exc:
            await self.close()
            raise ServiceError(f"{self.where}: {exc}") from None

    async def call(self, rec: Record, index: int) -> None:
        assert self._idle is not None
        p = self.spec.pipeline
        picks = [j % SEQUENCE for j in range(index * p, index * p + p)]
        gets = [self.gets[i] for i in picks]
        raw = b"".join(map(self._op, picks))
        rec.op = "pipeline" if p > 1 else "get" if gets[0] else "set"
        conn = await self._idle.get()
        done = False
        try:
            if conn is None or not conn.open:
                conn = await self._connect()
            replies = await conn.send(raw, p)
            done = True
        except ReplyFailed as exc:
            raise RequestFailed("server_error", str(exc)) from None
        finally:
            if not done and conn is not None:
                conn.close()  # a reply may still come: this connection is out of step
                self._all.discard(conn)
            self._idle.put_nowait(conn if done else None)
        try:
            _check(replies)
        except ReplyFailed as exc:
            raise RequestFailed("server_error", str(exc)) from None
        rec.items = p
        rec.nbytes = sum(len(r) for r, g in zip(replies, gets, strict=True) if g and r is not None)  # a miss is nil

    async def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._idle = None


def _check(replies: list[Any]) -> None:
    """An error reply (hiredis hands it over as an exception object) fails the request with its text."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise ReplyFailed(str(reply))


class Redis(BaseProtocol):
    names = ("redis",)
    part = Part("kv", KeyValue, required=False)

    def plan(self, case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
        assert endpoint is not None
        kv = case.recipe.workload.part_as(KeyValue)
        total = sum(kv.mix.values())
        spec = RedisKV(endpoint.host, endpoint.port, kv.keys, kv.value_bytes, kv.mix.get("get", 0.0) / total,
                       kv.pipeline, kv.preload, kv.db, kv.password_env, kv.seed)  # fmt: skip
        return adapter_plan(case, duration_s, spec, {"kind": "keyspace", "prompts": 0, "keys": kv.keys})


REDIS = Redis()
