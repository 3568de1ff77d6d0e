"""Vector database load: create a collection, bulk-insert vectors (timed as phases), then query it under
the engine's load with top-k and filters, scoring every answer's **recall@k** against the exact answer
computed with numpy on the same data. Speed without quality would reward a sloppy index.

One backend per database (``chroma.py``, ``milvus.py``, ``qdrant.py``) behind the small ``Backend``
interface; each uses its ecosystem's synchronous client on a thread pool as large as the concurrency
(queries take milliseconds; the hand-off, tens of microseconds, is inside the measured latency).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from time import perf_counter, sleep
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from loguru import logger
from pydantic import BaseModel, Field

from ...load.planning import Planned, adapter_plan, resolve_path
from ...metrics.files import user_cache
from ...metrics.records import Record
from ...orchestrators.base import Endpoint, ServiceError
from ...recipes.fields import PositiveInt, Strict
from ...recipes.registry import Part
from ...recipes.sweep import Case
from ..base import BaseProtocol, Preparation

Param = int | float | str | bool


class Vector(Strict):
    """``protocol: vector``: create ``collection``, insert ``count`` vectors (timed phases), then query
    it under load with ``top_k`` and, for ``filtered_share`` of queries, a filter on one of ``groups``
    groups; every answer's recall@k is scored against numpy's exact answer on the same data."""

    engine: Literal["chroma", "milvus", "qdrant"]
    collection: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{1,62}[A-Za-z0-9]$")] = "ubench"
    dim: PositiveInt = 64  # synthetic data; files give their own
    count: PositiveInt = 10_000  # vectors stored (files: at most)
    queries: PositiveInt = 1_000  # distinct query vectors, cycled
    clusters: PositiveInt = 16  # synthetic data: seeded Gaussian clusters
    metric: Literal["l2", "cosine", "ip"] = "l2"
    top_k: PositiveInt = 10
    index: Literal["hnsw", "flat", "auto"] = "hnsw"
    index_params: dict[str, Param] = Field(default_factory=dict)  # the engine's own names
    # A list is a sweep axis (ef: [16, 64, 256]): one case per value, recall beside throughput.
    search_params: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Param | list[Param]] = Field(
        default_factory=dict
    )
    filtered_share: Annotated[float, Field(ge=0, le=1)] = 0.0
    groups: PositiveInt = 10
    insert_batch: PositiveInt = 1_000
    # rebuild: drop and build the collection; reuse: keep one of the right size, else build it;
    # existing: the collection holds this data already (ids 0..count-1 in data order): never written
    setup: Literal["rebuild", "reuse", "existing"] = "rebuild"
    data: str | None = None  # .npy (rows x dim), relative to the recipe file
    query_data: str | None = None  # .npy; default: synthetic queries, or perturbed stored vectors
    api_key_env: str | None = None  # the environment variable holding an API key or token
    # Wait this long after the index reports ready, for stores that keep indexing in the background
    # without saying so (Milvus Lite: measured, queries in the first second after are brute force).
    settle_s: Annotated[float, Field(ge=0)] = 0.0
    seed: int = 0


@dataclass(frozen=True)
class VectorSearch:
    """What to do, picklable for worker processes; ``__call__`` makes the adapter inside the run's loop."""

    engine: str  # chroma | milvus | qdrant
    url: str  # http(s)://host:port of the service
    collection: str = "ubench"
    dim: int = 64
    count: int = 10_000
    queries: int = 1_000
    clusters: int = 16
    metric: str = "l2"  # l2 | cosine | ip
    top_k: int = 10
    index: str = "hnsw"  # hnsw | flat | auto
    index_params: tuple[tuple[str, Any], ...] = ()  # the engine's own names (pairs: the spec is hashable)
    search_params: tuple[tuple[str, Any], ...] = ()
    filtered_share: float = 0.0  # share of queries restricted to one group (a metadata filter)
    groups: int = 10
    insert_batch: int = 1_000
    setup: str = "rebuild"  # rebuild | reuse | existing
    data: str | None = None  # .npy of count x dim float32 (resolved path)
    query_data: str | None = None
    api_key_env: str | None = None  # read when connecting, never stored
    settle_s: float = 0.0  # wait after the index says it is ready (stores that finish indexing silently)
    seed: int = 0

    def __call__(self) -> VectorAdapter:
        return VectorAdapter(self)

    @property
    def where(self) -> str:
        return f"{self.engine} at {self.url}, collection {self.collection}"

    def prepare_key(self) -> str:
        """What ``prepare`` builds, named: cases that differ only in how they search share it. Chroma
        fixes ``ef_search`` when a collection is made (measured: ``modify`` changed the stored
        configuration, not the recall, 0.257 before and after), so there the search parameters count."""
        same = self if self.engine == "chroma" else replace(self, search_params=())
        return hashlib.sha256(repr(same).encode()).hexdigest()[:16]

    def prepare(self) -> dict[str, Any]:
        """Before any load (once per deployment: ``Services.prepare``): create the collection, insert the
        vectors and compute the exact answers, timed as the ``create``, ``insert`` (vectors/s), ``index``
        and ``truth`` phases."""
        base, _, groups = vectors(self)
        backend = connect(self)
        try:
            t0 = perf_counter()
            if self.setup == "existing":
                backend.check()  # names a missing collection; nothing is written
                fresh = False
            else:
                fresh = backend.create(self.setup == "rebuild")
            t1 = perf_counter()
            phases: dict[str, Any] = {"create": {"seconds": t1 - t0, "created": fresh}}
            if fresh:
                for start in range(0, len(base), self.insert_batch):
                    stop = min(start + self.insert_batch, len(base))
                    backend.insert(np.arange(start, stop), base[start:stop], groups[start:stop])
                t2 = perf_counter()
                phases["insert"] = {"vectors": len(base), "batch": self.insert_batch, "seconds": t2 - t1,
                                    "vectors_per_s": len(base) / (t2 - t1) if t2 > t1 else None}  # fmt: skip
            t2 = perf_counter()
            backend.ready()
            sleep(self.settle_s)
            phases["index"] = {"seconds": perf_counter() - t2, "settle_s": self.settle_s}
            stored = backend.count()
            if stored != len(base):
                raise ServiceError(
                    f"{self.where}: holds {stored} vectors, expected {len(base)} "
                    f"(workload.vector.setup is {self.setup}; 'rebuild' builds it again)"
                )
            t3 = perf_counter()
            query_plan(self)  # the exact answers, once, before any client process needs them
            phases["truth"] = {"seconds": perf_counter() - t3, "queries": self.queries}
            return phases
        finally:
            backend.close()


class Backend(Protocol):
    """One database's client, synchronous; raises ``ServiceError`` on setup errors and
    ``RequestFailed`` for a failed query where it can tell why."""

    def create(self, recreate: bool) -> bool:
        """Make the collection and its index (dropping one of the name when ``recreate``); False when
        it exists and is kept (``setup: reuse``)."""
        ...

    def insert(self, ids: np.ndarray, vectors: np.ndarray, groups: np.ndarray) -> None: ...

    def ready(self) -> None:
        """Block until inserted vectors are indexed and searchable."""
        ...

    def count(self) -> int: ...

    def check(self) -> None:
        """The collection exists and answers: raise ``ServiceError`` naming it otherwise."""
        ...

    def query(self, vector: np.ndarray, k: int, group: int | None) -> list[int]: ...

    def close(self) -> None: ...


def connect(spec: VectorSearch) -> Backend:
    try:
        module = importlib.import_module(f"{__name__}.{spec.engine}")
    except ImportError as exc:
        raise ServiceError(
            f"engine {spec.engine} needs its client library ({exc.name}): "
            f"pip install 'pytest-ubench[{spec.engine}]'"  # the extras are named after the engines
        ) from None
    backend: Backend = module.connect(spec)
    return backend


def clustered(n: int, dim: int, centers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Points around seeded cluster centres: real embeddings cluster, and uniform noise is a test no
    index passes (every neighbour is nearly as far as every other)."""
    assign = rng.integers(0, len(centers), n)
    return (centers[assign] + rng.normal(0.0, 0.35, (n, dim))).astype(np.float32)


def _read(path: str, what: str, dim: int | None) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ServiceError(f"workload.vector.{what}: cannot read {path}: {exc}") from None
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise ServiceError(f"workload.vector.{what}: {path} holds {arr.shape} {arr.dtype}; expected rows x dim numbers")
    if dim is not None and arr.shape[1] != dim:
        raise ServiceError(f"workload.vector.{what}: {path} has dimension {arr.shape[1]}, the data has {dim}")
    return np.ascontiguousarray(arr, dtype=np.float32)


@lru_cache(maxsize=4)
def vectors(spec: VectorSearch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stored vectors, the queries and each stored vector's group (for filters); seeded, so every
    process of a run and every run of a recipe sees the same data."""
    rng = np.random.default_rng([spec.seed, 7])
    if spec.data is not None:
        base = _read(spec.data, "data", None)[: spec.count]
    else:
        centers = rng.normal(0.0, 1.0, (spec.clusters, spec.dim))
        base = clustered(spec.count, spec.dim, centers, rng)
    if spec.query_data is not None:
        queries = _read(spec.query_data, "query_data", base.shape[1])[: spec.queries]
    elif spec.data is not None:  # held-out perturbations of stored vectors
        picks = base[rng.integers(0, len(base), spec.queries)]
        queries = (picks + rng.normal(0.0, 0.05 * float(base.std()), picks.shape)).astype(np.float32)
    else:
        queries = clustered(spec.queries, spec.dim, centers, rng)
    groups = (np.arange(len(base)) % spec.groups).astype(np.int64)
    return base, queries, groups


def exact_top_k(
    base: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str,
    groups: np.ndarray | None = None,
    group_of: np.ndarray | None = None,
) -> list[np.ndarray]:
    """The true k nearest stored vectors of each query by brute force (best first). With ``groups`` and
    ``group_of``, query i only sees the stored vectors of group ``group_of[i]`` (-1: all), a filter.

    Candidates come from a float32 pass (BLAS, memory bounded by query chunks) and are re-ranked in
    float64, so the answer is exact unless float32 misorders vectors beyond the candidate margin."""
    if metric == "cosine":
        base = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    base = np.ascontiguousarray(base, dtype=np.float32)
    norms = np.einsum("ij,ij->i", base, base)
    margin = min(len(base), k + max(k, 32))
    out: list[np.ndarray] = []
    chunk = max(1, 20_000_000 // max(1, len(base)))  # ~80 MB of float32 scores at a time
    for start in range(0, len(queries), chunk):
        q = np.ascontiguousarray(queries[start : start + chunk], dtype=np.float32)
        dots = q @ base.T
        score = norms[None, :] - 2.0 * dots if metric == "l2" else -dots  # smaller is nearer
        if groups is not None and group_of is not None:
            wanted = group_of[start : start + chunk]
            score[(groups[None, :] != wanted[:, None]) & (wanted[:, None] >= 0)] = np.inf
        part = np.argpartition(score, margin - 1, axis=1)[:, :margin]
        for row, (qi, cand) in enumerate(zip(q.astype(np.float64), part, strict=True)):
            cand = cand[np.isfinite(score[row, cand])]  # a filter may leave fewer than k
            exact = base[cand].astype(np.float64)
            d = ((exact - qi) ** 2).sum(axis=1) if metric == "l2" else -(exact @ qi)
            out.append(cand[np.argsort(d, kind="stable")][:k])
    return out


def query_plan(spec: VectorSearch) -> tuple[np.ndarray, list[np.ndarray]]:
    """Which group each query is restricted to (-1: none) and each query's exact answer under it;
    computed once per host and kept in this user's cache (``files.user_cache``), so a run's worker
    processes (and its repeats) read it instead of each spending the brute force again. What is read
    back is checked against the spec first; anything else is computed again."""
    key = _truth_key(spec)
    try:
        path: Path | None = _truth_cache(spec)
    except PermissionError as exc:  # a cache another user could write to is not read, nor written
        logger.warning("exact answers not cached: {}", exc)
        path = None
    if path is not None:
        try:
            with np.load(path, allow_pickle=False) as cached:
                group_of, flat, ends, stored = cached["group_of"], cached["ids"], cached["ends"], str(cached["key"])
            if stored == key and _plausible(spec, group_of, flat, ends):
                return group_of, np.split(flat, ends[:-1])
        except (OSError, ValueError, KeyError):
            pass
    base, queries, groups = vectors(spec)
    rng = np.random.default_rng([spec.seed, 11])
    filtered = rng.random(len(queries)) < spec.filtered_share
    group_of = np.where(filtered, rng.integers(0, spec.groups, len(queries)), -1)
    truth = exact_top_k(base, queries, spec.top_k, spec.metric, groups if filtered.any() else None, group_of)
    if path is not None:
        ends = np.cumsum([len(t) for t in truth])
        flat = np.concatenate(truth) if truth else np.zeros(0, int)
        tmp = path.with_suffix(f".{os.getpid()}.{secrets.token_hex(4)}.tmp.npz")
        np.savez(tmp, group_of=group_of, ids=flat, ends=ends, key=np.array(key))
        os.replace(tmp, path)
    return group_of, truth


def _plausible(spec: VectorSearch, group_of: np.ndarray, ids: np.ndarray, ends: np.ndarray) -> bool:
    """Exact answers that could be this spec's: one per query, at most top_k ids each, every id stored."""
    sizes = np.diff(np.concatenate([[0], ends])) if len(ends) else np.zeros(0)
    return bool(
        len(group_of) == len(ends) == spec.queries and (not len(ends) or ends[-1] == len(ids))
        and (sizes >= 0).all() and (sizes <= spec.top_k).all()
        and ((ids >= 0) & (ids < spec.count)).all() and ((group_of >= -1) & (group_of < spec.groups)).all()
    )  # fmt: skip


def _truth_cache(spec: VectorSearch) -> Path:
    """A file of this user's cache named by what the exact answer depends on (``_truth_key``)."""
    return user_cache("vector-truth") / f"{_truth_key(spec)[:32]}.npz"


def _truth_key(spec: VectorSearch) -> str:
    """Everything the exact answer depends on (data files by size and mtime), hashed; stored inside the
    cached file and checked on reading."""
    h = hashlib.sha256()
    for name in ("dim", "count", "queries", "clusters", "metric", "top_k", "filtered_share", "groups", "seed"):
        h.update(f"{name}={getattr(spec, name)};".encode())
    for p in (spec.data, spec.query_data):
        if p is not None:
            st = os.stat(p)
            h.update(f"{os.path.abspath(p)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def recall(found: list[int], truth: np.ndarray) -> float:
    """Share of the exact answer found; a filter leaving fewer than k candidates shrinks the answer."""
    if len(truth) == 0:
        return 1.0
    return len(set(found) & set(truth.tolist())) / len(truth)


class VectorAdapter:
    def __init__(self, spec: VectorSearch) -> None:
        self.spec = spec
        self.backend: Backend | None = None
        self.pool: ThreadPoolExecutor | None = None

    async def open(self, connections: int) -> None:
        spec = self.spec
        _, self.queries, _ = vectors(spec)
        self.group_of, self.truth = query_plan(spec)  # before the clock: a few ms to seconds of numpy
        self.pool = ThreadPoolExecutor(max_workers=max(1, connections), thread_name_prefix="ubench-vector")
        loop = asyncio.get_running_loop()
        try:
            self.backend = await loop.run_in_executor(self.pool, connect, spec)
            await loop.run_in_executor(self.pool, self.backend.check)
        except BaseException:
            await self.close()
            raise

    async def call(self, rec: Record, index: int) -> None:
        assert self.backend is not None
        i = index % len(self.queries)
        group = int(self.group_of[i])
        rec.op = "query" if group < 0 else "filtered_query"
        found = await asyncio.get_running_loop().run_in_executor(
            self.pool, self.backend.query, self.queries[i], self.spec.top_k, None if group < 0 else group
        )
        rec.items = 1
        rec.recall = recall(found, self.truth[i])

    async def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.backend is not None:
            self.backend.close()
            self.backend = None


class VectorProtocol(BaseProtocol):
    """``protocol: vector``: a collection prepared once per deployment, then queried under load, each
    answer scored against the exact one."""

    names = ("vector",)
    rate_unit = "queries/s"
    part = Part("vector", Vector)

    def sweep_axes(self, part: BaseModel | None) -> dict[str, list[Any]]:
        """A list in ``search_params`` (``ef: [16, 64, 256]``) sweeps it: recall beside throughput."""
        assert isinstance(part, Vector)
        return {name: v for name, v in part.search_params.items() if isinstance(v, list)}

    def spec(self, case: Case, endpoint: Endpoint) -> VectorSearch:
        v = case.recipe.workload.part_as(Vector)

        def path(p: str | None) -> str | None:
            return None if p is None else str(resolve_path(case, p))

        search = {k: case.point.get(k, val) for k, val in v.search_params.items()}  # a swept one: this case's
        return VectorSearch(
            v.engine, endpoint.url.rstrip("/"), v.collection, v.dim, v.count, v.queries, v.clusters, v.metric,
            v.top_k, v.index, tuple(sorted(v.index_params.items())), tuple(sorted(search.items())), v.filtered_share,
            v.groups, v.insert_batch, v.setup, path(v.data), path(v.query_data), v.api_key_env, v.settle_s, v.seed,
        )  # fmt: skip

    def plan(self, case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
        assert endpoint is not None
        v = case.recipe.workload.part_as(Vector)
        info = {"kind": "vectors", "prompts": 0, "engine": v.engine, "collection": v.collection, "vectors": v.count,
                "queries": v.queries, "top_k": v.top_k, "metric": v.metric, "index": v.index,
                "data": v.data or "synthetic"}  # fmt: skip
        return adapter_plan(case, duration_s, self.spec(case, endpoint), info)

    def preparation(self, case: Case, endpoint: Endpoint) -> Preparation:
        spec = self.spec(case, endpoint)
        return Preparation(spec.prepare_key(), spec.prepare)


VECTOR = VectorProtocol()

__all__ = ["VECTOR", "Backend", "Vector", "VectorAdapter", "VectorSearch", "exact_top_k", "recall", "vectors"]
