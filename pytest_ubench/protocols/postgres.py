"""SQL load on PostgreSQL through psycopg 3's asyncio pool: a weighted mix of statement classes, each
a statement or a transaction of several, with seeded random parameters; TPS and latency per class.

Without statements in the recipe, the mix is pgbench's TPC-B-like transaction on pgbench's tables at
``scale`` (created and filled before the clock starts). Every statement is tried once, rolled back,
before the run: a missing table or a typo stops the case with the database's own message, not a
thousand identical failures.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from loguru import logger
from pydantic import Field

from ..load.http import RequestFailed
from ..load.planning import Planned, adapter_plan
from ..metrics.records import Record
from ..orchestrators.base import Endpoint, ServiceError
from ..recipes.fields import PositiveFloat, PositiveInt, Strict
from ..recipes.registry import Part
from ..recipes.sweep import Case
from .base import BaseProtocol, secret


class RandomInt(Strict):
    """A parameter drawn uniformly from ``[low, high]`` per request (seeded): ``{random: [1, 100000]}``."""

    random: tuple[int, int]


class SqlStatement(Strict):
    """One statement class of the mix: a statement, or a list run as one transaction. Parameters are
    psycopg's named placeholders, ``%(aid)s``."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")]
    sql: str | list[str]
    weight: PositiveFloat = 1.0
    params: dict[str, int | float | str | RandomInt] = Field(default_factory=dict)


class Sql(Strict):
    """``protocol: postgres``: a weighted statement mix over a connection pool (its size is the
    concurrency); no statements means pgbench's TPC-B-like transaction at ``scale``."""

    database: str = "postgres"
    user: str = "postgres"
    password_env: str | None = None  # the environment variable holding the password
    setup: list[str] = Field(default_factory=list)  # run once before the clock starts; make them idempotent
    statements: list[SqlStatement] = Field(default_factory=list)
    scale: PositiveInt = 1  # the default mix: 100,000 accounts per unit, as pgbench
    seed: int = 0


POOL_WAIT_S = 30.0
SEQUENCE = 1 << 16


@dataclass(frozen=True)
class Statement:
    name: str
    sql: tuple[str, ...]  # several: one transaction
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)  # value, or (low, high) for a random integer


def tpcb(scale: int) -> tuple[list[str], list[Statement]]:
    """pgbench's tables and its default (TPC-B-like) transaction."""
    setup = [
        "CREATE TABLE IF NOT EXISTS pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88))",
        "CREATE TABLE IF NOT EXISTS pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84))",
        "CREATE TABLE IF NOT EXISTS pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84))",
        "CREATE TABLE IF NOT EXISTS pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, "
        "filler char(22))",
        f"INSERT INTO pgbench_branches SELECT b, 0, '' FROM generate_series(1, {scale}) b ON CONFLICT DO NOTHING",
        f"INSERT INTO pgbench_tellers SELECT t, (t - 1) / 10 + 1, 0, '' FROM generate_series(1, {10 * scale}) t "
        "ON CONFLICT DO NOTHING",
        f"INSERT INTO pgbench_accounts SELECT a, (a - 1) / 100000 + 1, 0, '' "
        f"FROM generate_series(1, {100000 * scale}) a ON CONFLICT DO NOTHING",
        "VACUUM ANALYZE",
    ]
    txn = Statement(
        "tpcb",
        (
            "UPDATE pgbench_accounts SET abalance = abalance + %(delta)s WHERE aid = %(aid)s",
            "SELECT abalance FROM pgbench_accounts WHERE aid = %(aid)s",
            "UPDATE pgbench_tellers SET tbalance = tbalance + %(delta)s WHERE tid = %(tid)s",
            "UPDATE pgbench_branches SET bbalance = bbalance + %(delta)s WHERE bid = %(bid)s",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
            "VALUES (%(tid)s, %(bid)s, %(aid)s, %(delta)s, CURRENT_TIMESTAMP)",
        ),
        1.0,
        {"aid": (1, 100000 * scale), "tid": (1, 10 * scale), "bid": (1, scale), "delta": (-5000, 5000)},
    )
    return setup, [txn]


@dataclass(frozen=True)
class PostgresSQL:
    """What to run, picklable for worker processes; ``__call__`` makes the adapter inside the run's loop."""

    host: str
    port: int
    statements: tuple[Statement, ...]
    setup: tuple[str, ...] = ()
    database: str = "postgres"
    user: str = "postgres"
    password_env: str | None = None  # read when connecting, never stored
    seed: int = 0

    def __call__(self) -> PostgresAdapter:
        return PostgresAdapter(self)


class PostgresAdapter:
    def __init__(self, spec: PostgresSQL) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        weights = np.array([s.weight for s in spec.statements], dtype=np.float64)
        self.choice = rng.choice(len(spec.statements), size=SEQUENCE, p=weights / weights.sum()).tolist()
        # Per statement and parameter: a seeded sequence of values (random integers drawn up front).
        self.values: list[dict[str, list[Any]]] = []
        for st in spec.statements:
            cols = {}
            for name, v in st.params.items():
                if isinstance(v, tuple):
                    cols[name] = rng.integers(v[0], v[1], SEQUENCE, endpoint=True).tolist()
                else:
                    cols[name] = [v] * SEQUENCE
            self.values.append(cols)
        self.pool: Any = None
        self.where = f"postgresql at {spec.host}:{spec.port}/{spec.database}"
        self.conninfo = ""  # in memory only: it holds the password
        self.down = False  # the server refused a connection after a request failed to reach it
        self.probed = 0.0

    def params(self, which: int, i: int) -> dict[str, Any]:
        return {name: col[i] for name, col in self.values[which].items()}

    async def open(self, connections: int) -> None:
        try:
            import psycopg
            from psycopg_pool import AsyncConnectionPool
        except ImportError:
            raise ServiceError("protocol postgres needs psycopg: pip install 'pytest-ubench[postgres]'") from None
        spec = self.spec
        password = secret(spec.password_env, "workload.sql.password_env")
        conninfo = psycopg.conninfo.make_conninfo(
            host=spec.host, port=spec.port, dbname=spec.database, user=spec.user, password=password, connect_timeout=5
        )
        try:
            # One plain connection first: a wrong password or database is reported as the server says it.
            async with await self._connect(psycopg, conninfo) as conn:
                for sql in spec.setup:
                    await conn.execute(sql)
                for which, st in enumerate(spec.statements):
                    await self._try(conn, which, st)
        except psycopg.OperationalError as exc:
            raise ServiceError(f"{self.where}: {str(exc).strip()}") from None
        except psycopg.Error as exc:
            raise ServiceError(f"{self.where}: setup: {str(exc).strip()}") from None
        self.conninfo = conninfo
        # Requests beyond the pool wait for a connection (that wait is part of their latency); not for
        # ever: a pool that cannot reconnect to a dead server fails them after POOL_WAIT_S.
        self.pool = AsyncConnectionPool(
            conninfo, min_size=max(1, connections), max_size=max(1, connections), open=False, timeout=POOL_WAIT_S
        )
        await self.pool.open(wait=True, timeout=30)

    async def _refused(self) -> bool:
        """Whether the server refuses connections now (probed at most once a second). The pool would
        make every request wait for a reconnect that cannot come; with this, requests to a dead server
        fail at once as ``connect`` and the engine stops the run as unreachable."""
        import psycopg

        now = time.monotonic()
        if now - self.probed >= 1.0:
            self.probed = now
            try:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, connect_timeout=2)
                await conn.close()
                self.down = False
            except psycopg.OperationalError:
                self.down = True
        return self.down

    @staticmethod
    async def _connect(psycopg: Any, conninfo: str) -> Any:
        """A server whose port is open may still be starting up (a TCP health check passes then)."""
        for _ in range(100):
            try:
                return await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
            except psycopg.OperationalError as exc:
                if "starting up" not in str(exc):
                    raise
                await asyncio.sleep(0.1)
        return await psycopg.AsyncConnection.connect(conninfo, autocommit=True)

    async def _try(self, conn: Any, which: int, st: Statement) -> None:
        """Each statement once, rolled back: a typo or a missing table stops the case before the load."""
        import psycopg

        try:
            async with conn.transaction(force_rollback=True):
                for sql in st.sql:
                    await conn.execute(sql, self.params(which, 0))
        except psycopg.Error as exc:
            raise ServiceError(f"{self.where}: statement {st.name!r}: {str(exc).strip()}") from None

    async def call(self, rec: Record, index: int) -> None:
        import psycopg

        i = index % SEQUENCE
        which = self.choice[i]
        st = self.spec.statements[which]
        rec.op = st.name
        params = self.params(which, i)
        if self.down and await self._refused():
            raise RequestFailed("connect", self.where)
        try:
            async with self.pool.connection() as conn:
                if len(st.sql) == 1:
                    cur = await conn.execute(st.sql[0], params)
                    rec.items = max(cur.rowcount, 0)
                else:
                    async with conn.transaction():
                        for sql in st.sql:
                            await conn.execute(sql, params)
                    rec.items = 1
        except psycopg.OperationalError:  # a broken connection, or the pool's wait ran out
            await self._refused()
            raise RequestFailed("connect", self.where) from None
        except psycopg.errors.SerializationFailure:
            raise RequestFailed("serialization_failure") from None
        except psycopg.errors.DeadlockDetected:
            raise RequestFailed("deadlock") from None
        except psycopg.Error as exc:
            raise RequestFailed("sql_error", str(exc).strip()) from None

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None


class Postgres(BaseProtocol):
    names = ("postgres",)
    part = Part("sql", Sql, required=False)

    def plan(self, case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
        assert endpoint is not None
        sql = case.recipe.workload.part_as(Sql)
        setup, statements = tpcb(sql.scale) if not sql.statements else ([], [])
        if not sql.statements and case.concurrency > sql.scale:
            logger.warning("{}: sql.scale {} is below {} connections: every TPC-B transaction updates one of "
                           "{} branch rows, so the figures are mostly their lock queue (pgbench's guidance: a "
                           "scale at least the number of clients)", case.id, sql.scale, case.concurrency,
                           sql.scale)  # fmt: skip
        for st in sql.statements:
            params = {k: (v.random[0], v.random[1]) if isinstance(v, RandomInt) else v for k, v in st.params.items()}
            statements.append(Statement(st.name, tuple([st.sql] if isinstance(st.sql, str) else st.sql), st.weight,
                                        params))  # fmt: skip
        spec = PostgresSQL(endpoint.host, endpoint.port, tuple(statements), tuple(setup + sql.setup), sql.database,
                           sql.user, sql.password_env, sql.seed)  # fmt: skip
        info = {"kind": "statements", "prompts": 0, "statements": [st.name for st in spec.statements]}
        return adapter_plan(case, duration_s, spec, info)


POSTGRES = Postgres()
