"""Key-value load on Redis through redis-py's asyncio client: GET/SET mixes over a key space, optionally
pipelined (several operations per round trip).

The operation and key of request ``i`` come from a seeded sequence, so two runs (and the processes of
one run) issue the same operations. Keys are preloaded before the clock starts so GETs hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from ..load.http import RequestFailed
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


def key(i: int) -> str:
    return f"ubench:{i}"


class RedisAdapter:
    def __init__(self, spec: RedisKV) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        self.gets = (rng.random(SEQUENCE) < spec.get_share).tolist()
        self.keys = rng.integers(0, spec.keys, SEQUENCE).tolist()
        self.value = rng.bytes(spec.value_bytes)
        self.client: Any = None
        self.where = f"redis at {spec.host}:{spec.port}"

    async def open(self, connections: int) -> None:
        try:
            import redis.asyncio as redis
            from redis import exceptions
        except ImportError:
            raise ServiceError("protocol redis needs the redis package: pip install 'pytest-ubench[redis]'") from None

        spec = self.spec
        password = secret(spec.password_env, "workload.kv.password_env")
        # Blocking pool: in open loop, requests beyond the connections wait for one (that wait is part
        # of their latency, measured from the intended send time).
        pool = redis.BlockingConnectionPool(
            host=spec.host, port=spec.port, db=spec.db, password=password, max_connections=max(1, connections),
            timeout=None, socket_connect_timeout=5,
        )  # fmt: skip
        self.client = redis.Redis(connection_pool=pool)
        try:
            await self.client.ping()
            if spec.preload:
                for start in range(0, spec.keys, PRELOAD_BATCH):
                    pipe = self.client.pipeline(transaction=False)
                    for i in range(start, min(start + PRELOAD_BATCH, spec.keys)):
                        pipe.set(key(i), self.value)
                    await pipe.execute()
        except exceptions.AuthenticationError:
            await self.close()
            raise ServiceError(f"{self.where}: authentication failed (check workload.kv.password_env)") from None
        except (exceptions.ConnectionError, OSError) as exc:
            await self.close()
            raise ServiceError(f"{self.where}: cannot connect: {exc}") from None
        except exceptions.ResponseError as exc:
            await self.close()
            raise ServiceError(f"{self.where}: {exc}") from None

    async def call(self, rec: Record, index: int) -> None:
        from redis import exceptions

        p = self.spec.pipeline
        try:
            if p == 1:
                i = index % SEQUENCE
                if self.gets[i]:
                    rec.op = "get"
                    value = await self.client.get(key(self.keys[i]))
                    rec.nbytes = len(value) if value else 0
                else:
                    rec.op = "set"
                    await self.client.set(key(self.keys[i]), self.value)
                rec.items = 1
                return
            pipe = self.client.pipeline(transaction=False)
            for j in range(index * p, index * p + p):
                i = j % SEQUENCE
                if self.gets[i]:
                    pipe.get(key(self.keys[i]))
                else:
                    pipe.set(key(self.keys[i]), self.value)
            results = await pipe.execute()
            rec.op, rec.items = "pipeline", p
            rec.nbytes = sum(len(r) for r in results if isinstance(r, bytes))
        except exceptions.ConnectionError:
            raise RequestFailed("connect", self.where) from None
        except exceptions.TimeoutError:
            raise RequestFailed("timeout", self.where) from None
        except exceptions.ResponseError as exc:
            raise RequestFailed("server_error", str(exc)) from None

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            await self.client.connection_pool.disconnect()
            self.client = None


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
