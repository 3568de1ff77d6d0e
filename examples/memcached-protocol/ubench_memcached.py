"""memcached's text protocol as a pytest-ubench protocol: one module, registered under the
``ubench.protocols`` entry-point group (pyproject.toml). Nothing in pytest-ubench names it.

A recipe's ``workload.memcached`` part (the ``Memcached`` model) says how many keys, how large the
values and which share of requests are GETs. The engine schedules the load and times each call; this
module makes the calls over a pool of connections and fills each record's operation, bytes and items.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from pytest_ubench.load.http import RequestFailed
from pytest_ubench.load.planning import Planned, adapter_plan
from pytest_ubench.metrics.records import Record
from pytest_ubench.orchestrators.base import Endpoint, ServiceError
from pytest_ubench.protocols import BaseProtocol, Part
from pytest_ubench.recipes.fields import PositiveInt, Strict
from pytest_ubench.recipes.sweep import Case

SEQUENCE = 1 << 14  # operations drawn once (seeded) and cycled


class Memcached(Strict):
    """``workload.memcached``: GETs and SETs over ``keys`` keys of ``value_bytes`` bytes each."""

    keys: PositiveInt = 1000
    value_bytes: PositiveInt = 100
    get_share: float = Field(0.9, ge=0, le=1)
    seed: int = 0


@dataclass(frozen=True)
class Calls:
    """What to do, picklable for worker processes; called inside the run's event loop for the adapter."""

    host: str
    port: int
    spec: Memcached

    def __call__(self) -> Adapter:
        return Adapter(self)


class Adapter:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        rng = np.random.default_rng(calls.spec.seed)
        self.gets = (rng.random(SEQUENCE) < calls.spec.get_share).tolist()
        self.keys = rng.integers(0, calls.spec.keys, SEQUENCE).tolist()
        self.value = b"x" * calls.spec.value_bytes
        self.pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.where = f"memcached at {calls.host}:{calls.port}"

    async def open(self, connections: int) -> None:
        """Connect, and set every key before the clock starts so GETs hit."""
        try:
            for _ in range(max(1, connections)):
                self.pool.put_nowait(await asyncio.open_connection(self.calls.host, self.calls.port))
            reader, writer = await self.pool.get()
            for k in range(self.calls.spec.keys):
                await self._set(reader, writer, k)
            self.pool.put_nowait((reader, writer))
        except (OSError, RequestFailed) as exc:
            await self.close()
            raise ServiceError(f"{self.where}: cannot connect and preload: {exc}") from None

    async def _set(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, k: int) -> None:
        writer.write(b"set k%d 0 0 %d\r\n%b\r\n" % (k, len(self.value), self.value))
        if await reader.readline() != b"STORED\r\n":
            raise RequestFailed("server_error", self.where)

    async def call(self, rec: Record, index: int) -> None:
        i = index % SEQUENCE
        reader, writer = await self.pool.get()
        try:
            if self.gets[i]:
                rec.op = "get"
                writer.write(b"get k%d\r\n" % self.keys[i])
                header = await reader.readline()
                if not header.startswith(b"VALUE "):
                    kind = "miss" if header == b"END\r\n" else "server_error"
                    raise RequestFailed(kind, header.decode(errors="replace"))
                size = int(header.split()[3])
                await reader.readexactly(size + 2)  # the value and its \r\n
                if await reader.readline() != b"END\r\n":
                    raise RequestFailed("server_error", "no END after the value")
                rec.nbytes = size
            else:
                rec.op = "set"
                await self._set(reader, writer, self.keys[i])
            rec.items = 1
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise RequestFailed("connection_closed", str(exc)) from None
        finally:
            self.pool.put_nowait((reader, writer))

    async def close(self) -> None:
        while not self.pool.empty():
            _, writer = self.pool.get_nowait()
            writer.close()


class MemcachedProtocol(BaseProtocol):
    """The plug-in: its name, its part of the workload, and how a case becomes load."""

    names = ("memcached",)
    part = Part("memcached", Memcached, required=False)  # left out: the model's defaults

    def plan(self, case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
        assert endpoint is not None  # needs_service (the default): the recipe has a service
        spec = case.recipe.workload.part_as(Memcached)
        info = {"kind": "keyspace", "prompts": 0, "keys": spec.keys}  # what the results say was sent
        return adapter_plan(case, duration_s, Calls(endpoint.host, endpoint.port, spec), info)


MEMCACHED = MemcachedProtocol()
