"""From a recipe case to a load plan: the prompts, the serialised requests and the arrival schedule.

The one way a case becomes a plan, for the in-process engine, local worker processes and Slurm
client tasks alike. Files named by a recipe (datasets, traces) are read relative to the recipe.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from loguru import logger

from .load import dataset, engine, ollama, schedule
from .load.adapters.grpc_calls import GrpcCall
from .load.adapters.postgres import PostgresSQL, Statement, tpcb
from .load.adapters.redis_kv import RedisKV
from .load.adapters.s3 import S3Objects
from .load.adapters.vectordb import VectorSearch
from .load.generic import StatusSink
from .load.http import build_request
from .load.kserve import InferSink, infer_path
from .load.kserve import bodies as kserve_bodies
from .load.openai import PATHS, EmbeddingsSink, embeddings_body, request_body
from .load.tokenizer import NoTokenizer, ServerTokenizer
from .metrics.records import Record
from .orchestrators import placeholders
from .orchestrators.base import Endpoint, ServiceError
from .recipes.schema import S3, Dataset, KeyValue, Load, Ramp, RandomInt, Sql, TokenLength, Vector, parse_bytes
from .recipes.sweep import Case


class PlanError(ServiceError):
    """A case that cannot be planned (a broken dataset file, a tokenizer that was required)."""


@dataclass
class Planned:
    plan: engine.LoadPlan
    dataset: dict[str, Any]  # what was sent, for the results: kind, count, token_counts
    stages: list[schedule.Stage] = field(default_factory=list)  # ramp steps, after the warm-up
    phases: dict[str, Any] | None = None  # once-per-case setup before the load (``prepare``), timed


def lengths(spec: TokenLength) -> dataset.Lengths:
    if isinstance(spec, int):
        return dataset.Lengths("fixed", float(spec), min=spec, max=spec)
    return dataset.Lengths(spec.dist, spec.mean, spec.std, spec.min, spec.max)


def _resolve(case: Case, path: str) -> Path:
    p = Path(os.path.expandvars(path)).expanduser()
    return p if p.is_absolute() else case.loaded.path.parent / p


def prompts_for(case: Case, endpoint: Endpoint) -> tuple[list[dataset.Prompt], dict[str, Any]]:
    d: Dataset = case.recipe.workload.dataset
    try:
        if d.kind == "jsonl":
            assert d.path is not None
            prompts = dataset.read_prompts(_resolve(case, d.path), d.prompts)
            info: dict[str, Any] = {"kind": d.kind, "path": d.path, "token_counts": "as written"}
        elif d.kind == "sharegpt":
            assert d.path is not None
            prompts = dataset.read_sharegpt(_resolve(case, d.path), d.prompts)
            info = {"kind": d.kind, "path": d.path, "token_counts": "as written"}
        else:
            prompts = dataset.synthetic(d.prompts, lengths(d.prompt_tokens), lengths(d.output_tokens), d.seed, case.id)
            prompts, counted = _exact_lengths(prompts, case, endpoint)
            info = {"kind": d.kind, "token_counts": counted}
    except dataset.DatasetError as exc:
        raise PlanError(f"{case.recipe.name}: workload.dataset: {exc}") from None
    if d.unique_prefix:
        prompts = dataset.with_unique_prefix(prompts, d.seed, case.id)
    info |= {"prompts": len(prompts), "unique_prefix": d.unique_prefix}
    return prompts, info


def _exact_lengths(prompts: list[dataset.Prompt], case: Case, endpoint: Endpoint) -> tuple[list[dataset.Prompt], str]:
    """Synthetic prompts cut to exact token counts by the server's tokenizer, where it has one."""
    d = case.recipe.workload.dataset
    if d.token_counts == "approximate":
        return prompts, "approximate (one character per token)"
    tok = ServerTokenizer(endpoint.url, case.recipe.workload.model)
    try:
        out = []
        for p in prompts:
            assert p.text is not None
            text = dataset.cut_to_tokens(p.text, len(p.text), tok.tokenize, tok.detokenize)
            if text is None:
                raise NoTokenizer("a prompt did not round-trip through /detokenize to its token count")
            out.append(dataset.Prompt(text, max_tokens=p.max_tokens))
        return out, "exact (server /tokenize)"
    except NoTokenizer as exc:
        if d.token_counts == "server":
            raise PlanError(f"{case.recipe.name}: workload.dataset.token_counts is 'server' but {exc}") from None
        logger.info("{}: prompt lengths approximate: {}", case.id, exc)
        return prompts, "approximate (one character per token)"
    finally:
        tok.close()


def schedule_for(
    load: Load, warmup_s: float, duration_s: float
) -> tuple[schedule.Schedule | None, float, list[schedule.Stage]]:
    """Open loop's arrivals when they are more than one rate: a ramp, bursts or a trace; and the
    load window's length they imply."""
    shape = load.burstiness
    stages: list[schedule.Stage] = []
    if load.trace is not None:
        return None, duration_s, stages  # built with its own prompts in plan_for
    if isinstance(load.rate, Ramp):
        stages = [schedule.Stage(r, load.rate.step_s) for r in load.rate.rates()]
        duration_s = sum(st.duration_s for st in stages)
        warm = [schedule.Stage(stages[0].rate, warmup_s)] if warmup_s > 0 else []
        offsets = schedule.staged(warm + stages, load.arrival, load.seed, shape)
    elif load.bursts is not None:
        assert isinstance(load.rate, float | int)
        offsets = schedule.arrivals(float(load.rate), warmup_s + duration_s, load.arrival, load.seed, shape)
    else:
        return None, duration_s, stages
    if load.bursts is not None:
        extra = schedule.bursts(load.bursts.every_s, load.bursts.size, warmup_s + duration_s, first_s=warmup_s)
        offsets = np.concatenate([offsets, extra])
    return schedule.build(offsets), duration_s, stages


def plan_for(case: Case, endpoint: Endpoint, duration_s: float | None = None) -> Planned:
    w = case.recipe.workload
    load = case.load
    if load.mode == "search":
        raise PlanError(f"{case.id}: a search case is planned probe by probe (search.probe_case)")
    adapted = _adapter_for(case, endpoint)
    if adapted is not None:
        return _adapter_plan(case, duration_s, *adapted)
    if w.protocol in ("http", "kserve-v2"):  # fixed requests: no prompts, and no tokenizer to ask
        prompts: list[dataset.Prompt] = []
        info: dict[str, Any] = {"kind": "none", "prompts": 0}
    else:
        prompts, info = prompts_for(case, endpoint)
    duration = w.duration_s if duration_s is None else duration_s
    sched, duration, stages = schedule_for(load, w.warmup_s, duration)
    if load.trace is not None:
        try:
            times, prompts = dataset.read_trace(_resolve(case, load.trace.path))
        except dataset.DatasetError as exc:
            raise PlanError(f"{case.recipe.name}: workload.load.trace: {exc}") from None
        times = times / load.trace.speed  # the first warmup_s seconds of the trace are the warm-up
        sched = schedule.build(times)
        duration = max(float(times[-1]) - w.warmup_s, 0.0) + 1e-3
        info = {"kind": "trace", "path": load.trace.path, "speed": load.trace.speed, "prompts": len(prompts)}
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if w.stream else "application/json"}
    if w.api_key_env:
        key = os.environ.get(w.api_key_env)
        if not key:
            raise ServiceError(f"{case.recipe.name}: workload.api_key_env names {w.api_key_env}, which is not set")
        headers["Authorization"] = f"Bearer {key}"
    base = urlsplit(endpoint.url).path.rstrip("/")
    sink: Callable[[Record], engine.Sink] | None = None
    try:
        if w.protocol == "http":
            reqs, sink = _http_call(case, endpoint, base)
        elif w.protocol == "kserve-v2":
            reqs, sink, info = _kserve_calls(case, endpoint, base, headers)
        elif w.protocol == "openai-embeddings":
            texts = [p.text or "" for p in prompts]
            b = w.batch_size
            bodies = [
                embeddings_body(w.model, [texts[(i + k) % len(texts)] for k in range(b)], w.params)
                for i in range(0, len(texts), b)
            ]
            path = base + PATHS[w.protocol]
            reqs = [build_request("POST", endpoint.host, endpoint.port, path, body, headers) for body in bodies]
            sink = partial(EmbeddingsSink, expected=b)
            info["batch_size"] = b
        else:
            outs = lengths(w.dataset.output_tokens).draw(len(prompts), np.random.default_rng([w.dataset.seed, 2]))
            native = w.protocol in ollama.PATHS  # Ollama's own API: NDJSON, its counts and timings
            build = ollama.request_body if native else request_body
            bodies = [
                build(w.protocol, w.model, p, int(o), w.stream, w.params) for p, o in zip(prompts, outs, strict=True)
            ]
            path = base + (ollama.PATHS if native else PATHS)[w.protocol]
            if native:
                headers["Accept"] = "application/x-ndjson" if w.stream else "application/json"
                sink = partial(ollama.sink_for, w.stream)
            reqs = [build_request("POST", endpoint.host, endpoint.port, path, body, headers) for body in bodies]
    except ValueError as exc:
        raise PlanError(f"{case.recipe.name}: workload.dataset: {exc}") from None
    return Planned(_load_plan(case, sched, duration, reqs, sink=sink), info, stages)


def _load_plan(
    case: Case,
    sched: schedule.Schedule | None,
    duration: float,
    requests: list[bytes],
    sink: Callable[[Record], engine.Sink] | None = None,
    adapter: Callable[[], engine.Adapter] | None = None,
) -> engine.LoadPlan:
    w, load = case.recipe.workload, case.load
    assert not isinstance(load.concurrency, list) and not isinstance(load.rate, list)  # resolved by the sweep
    return engine.LoadPlan(
        requests=requests,
        stream=w.stream,
        mode=load.mode,
        concurrency=load.concurrency or 1,
        rate=float(load.rate) if isinstance(load.rate, float | int) else 1.0,
        arrival=load.arrival,
        burstiness=load.burstiness,
        seed=load.seed,
        schedule=sched,
        max_in_flight=load.max_in_flight,
        duration_s=duration,
        warmup_s=w.warmup_s,
        max_requests=w.max_requests,
        connect_timeout_s=w.timeouts.connect_s,
        request_timeout_s=w.timeouts.request_s,
        sink=sink,
        adapter=adapter,
    )


def _kv_options(kv: KeyValue) -> dict[str, Any]:
    total = sum(kv.mix.values())
    return {"keys": kv.keys, "value_bytes": kv.value_bytes, "get_share": kv.mix.get("get", 0.0) / total,
            "pipeline": kv.pipeline, "preload": kv.preload, "db": kv.db, "password_env": kv.password_env,
            "seed": kv.seed}  # fmt: skip


def _sql_spec(sql: Sql, endpoint: Endpoint) -> PostgresSQL:
    setup, statements = tpcb(sql.scale) if not sql.statements else ([], [])
    for st in sql.statements:
        params = {k: (v.random[0], v.random[1]) if isinstance(v, RandomInt) else v for k, v in st.params.items()}
        statements.append(Statement(st.name, tuple([st.sql] if isinstance(st.sql, str) else st.sql), st.weight, params))
    return PostgresSQL(endpoint.host, endpoint.port, tuple(statements), tuple(setup + sql.setup), sql.database,
                       sql.user, sql.password_env, sql.seed)  # fmt: skip


def _adapter_for(case: Case, endpoint: Endpoint) -> tuple[Callable[[], engine.Adapter], dict[str, Any]] | None:
    """The client-library protocols (not HTTP): what the adapter does, and what the results say was sent."""
    w = case.recipe.workload
    if w.protocol == "redis":
        kv = w.kv or KeyValue()
        return RedisKV(endpoint.host, endpoint.port, **_kv_options(kv)), {
            "kind": "keyspace",
            "prompts": 0,
            "keys": kv.keys,
        }
    if w.protocol == "postgres":
        spec = _sql_spec(w.sql or Sql(), endpoint)
        return spec, {"kind": "statements", "prompts": 0, "statements": [st.name for st in spec.statements]}
    if w.protocol == "s3":
        s3 = w.s3 or S3()
        total = sum(s3.mix.values())
        sizes = tuple(parse_bytes(v) for v in s3.object_sizes)
        objects = S3Objects(
            endpoint.url, s3.bucket, s3.create_bucket, s3.mix.get("put", 0.0) / total, s3.mix.get("list", 0.0) / total,
            sizes, s3.keys, parse_bytes(s3.multipart_bytes), parse_bytes(s3.part_bytes), s3.region,
            s3.access_key_env, s3.secret_key_env, s3.seed,
        )  # fmt: skip
        return objects, {"kind": "objects", "prompts": 0, "keys": s3.keys, "object_sizes": list(sizes)}
    if w.protocol == "grpc":
        g = w.grpc
        assert g is not None
        call = GrpcCall(f"{endpoint.host}:{endpoint.port}", g.service, g.method, json.dumps(g.request),
                        str(_resolve(case, g.proto)) if g.proto else None,
                        tuple(str(_resolve(case, i)) for i in g.include), tuple(sorted(g.metadata.items())),
                        endpoint.url.startswith("https:"), g.channels)  # fmt: skip
        return call, {"kind": "grpc", "prompts": 0, "method": f"{g.service}/{g.method}",
                      "descriptors": g.proto or "server reflection"}  # fmt: skip
    if w.protocol == "vector":
        assert w.vector is not None
        v = w.vector
        return _vector_spec(case, v, endpoint), {"kind": "vectors", "prompts": 0, "engine": v.engine,
                "collection": v.collection, "vectors": v.count, "queries": v.queries, "top_k": v.top_k,
                "metric": v.metric, "index": v.index, "data": v.data or "synthetic"}  # fmt: skip
    return None


def _vector_spec(case: Case, v: Vector, endpoint: Endpoint) -> VectorSearch:
    def path(p: str | None) -> str | None:
        return None if p is None else str(_resolve(case, p))

    search = {k: case.point.get(k, val) for k, val in v.search_params.items()}  # a swept one: this case's value

    return VectorSearch(
        v.engine, endpoint.url.rstrip("/"), v.collection, v.dim, v.count, v.queries, v.clusters, v.metric, v.top_k,
        v.index, tuple(sorted(v.index_params.items())), tuple(sorted(search.items())), v.filtered_share,
        v.groups, v.insert_batch, v.setup, path(v.data), path(v.query_data), v.api_key_env, v.settle_s, v.seed,
    )  # fmt: skip


def preparation(case: Case, endpoint: Endpoint) -> tuple[str, Callable[[], dict[str, Any]]] | None:
    """Work a protocol does before any load, timed as phases (a vector collection's create, insert,
    index and exact answers): its key (cases with one key share it) and the work; None for protocols
    without."""
    adapted = _adapter_for(case, endpoint)
    spec = adapted[0] if adapted is not None else None
    if not isinstance(spec, VectorSearch):
        return None
    return spec.prepare_key(), spec.prepare


def _adapter_plan(
    case: Case, duration_s: float | None, adapter: Callable[[], engine.Adapter], info: dict[str, Any]
) -> Planned:
    """A protocol spoken by a client library: the engine schedules, the adapter makes each call."""
    w, load = case.recipe.workload, case.load
    duration = w.duration_s if duration_s is None else duration_s
    sched, duration, stages = schedule_for(load, w.warmup_s, duration)
    if load.trace is not None:
        raise PlanError(f"{case.recipe.name}: workload.load.trace replays HTTP requests; {w.protocol} has none")
    return Planned(_load_plan(case, sched, duration, [], adapter=adapter), info, stages)


def _kserve_calls(
    case: Case, endpoint: Endpoint, base: str, headers: dict[str, str]
) -> tuple[list[bytes], Callable[[Record], engine.Sink], dict[str, Any]]:
    k = case.recipe.workload.kserve
    assert k is not None
    inputs = [i.model_dump() for i in k.inputs]
    path = base + infer_path(k.model, k.version)
    headers = {**headers, "Accept": "application/json"}
    reqs = [build_request("POST", endpoint.host, endpoint.port, path, body, headers)
            for body in kserve_bodies(inputs, k.outputs, k.variants, k.seed)]  # fmt: skip
    batch = k.inputs[0].shape[0]
    info = {"kind": "tensors", "prompts": 0, "model": k.model, "bodies": len(reqs), "batch": batch}
    return reqs, partial(InferSink, batch=batch), info


def _http_call(case: Case, endpoint: Endpoint, base: str) -> tuple[list[bytes], Callable[[Record], engine.Sink]]:
    """``protocol: http``: the one request, with ``${VAR}`` in header values read from the environment."""
    call = case.recipe.workload.http
    assert call is not None
    headers = {}
    for name, value in call.headers.items():
        try:
            headers[name] = placeholders.expand(value, {})
        except ServiceError:
            missing = ", ".join(placeholders.env_references(value))
            where = f"{case.recipe.name}: workload.http.headers.{name}"
            raise PlanError(f"{where}: environment variable {missing} is not set") from None
    body = b""
    if isinstance(call.body, str):
        body = call.body.encode()
    elif call.body is not None:
        body = json.dumps(call.body, separators=(",", ":")).encode()
        headers.setdefault("Content-Type", "application/json")
    raw = build_request(call.method, endpoint.host, endpoint.port, base + call.path, body, headers)
    return [raw], partial(StatusSink, expect=call.expect_status)
