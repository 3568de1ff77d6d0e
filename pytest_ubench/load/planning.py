"""What every protocol's plan shares: the arrival schedule of a case's load, the engine's plan built from
it, the HTTP headers a workload asks for, and where a recipe's files are.

A protocol (``pytest_ubench.protocols``) turns a case into a ``Planned``: requests and how to read their
responses, or an adapter that makes each call, or a ``Tool`` that generates and measures the load itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..metrics.records import Record
from ..orchestrators import keys
from ..orchestrators.base import Endpoint, MissingVariable, Orchestrator, ServiceError
from ..recipes.fields import header_problem, parse_bytes
from ..recipes.schema import Load, Ramp
from ..recipes.sweep import Case
from . import engine, schedule


class PlanError(ServiceError):
    """A case that cannot be planned (a broken dataset file, a tokenizer that was required)."""


class PlanVariableMissing(PlanError, MissingVariable):
    """A variable the plan reads (a header's ``${VAR}``, ``api_key_env``) is not set: a usage problem."""


@dataclass(frozen=True)
class ToolRun:
    """What a tool-driven protocol measured: the ``requests``/``throughput``/``ops`` parts of a result."""

    summary: dict[str, Any]
    dataset: dict[str, Any]  # what was run, for the results
    endpoint: str  # what was measured (a URL, file://<directory>)
    command: list[str]  # the command that generated the load
    failed_checks: dict[str, str] = field(default_factory=dict)  # a check that failed (its expression): why
    aborted: str | None = None  # "interrupted": Ctrl-C, what was measured until then is kept
    wall_t0: float = 0.0  # epoch seconds
    wall_t1: float = 0.0


@dataclass(frozen=True)
class ToolContext:
    """Where a tool runs its load: on this host, or as a job of client tasks (``workload.orchestration:
    slurm``) through ``tasks``."""

    run_dir: Path
    tasks: Orchestrator | None
    progress: engine.Progress | None = None
    site: dict[str, str] = field(default_factory=dict)  # the placement's {scratch}, {project}


Tool = Callable[[ToolContext], ToolRun]


@dataclass
class Planned:
    """A case's load: the engine's plan, or a tool that generates and measures the load itself."""

    plan: engine.LoadPlan | Tool
    dataset: dict[str, Any]  # what was sent, for the results: kind, count, token_counts
    stages: list[schedule.Stage] = field(default_factory=list)  # ramp steps, after the warm-up
    phases: dict[str, Any] | None = None  # once-per-case setup before the load (``prepare``), timed


def resolve_path(case: Case, path: str) -> Path:
    """A file a recipe names: ``~`` and ``${VAR}`` expanded, relative to the recipe file."""
    p = Path(os.path.expandvars(path)).expanduser()
    return p if p.is_absolute() else case.loaded.path.parent / p


def schedule_for(
    load: Load, warmup_s: float, duration_s: float
) -> tuple[schedule.Schedule | None, float, list[schedule.Stage]]:
    """Open loop's arrivals when they are more than one rate: a ramp or bursts (a trace brings its own,
    read by the protocol with its prompts); and the load window's length they imply."""
    shape = load.burstiness
    stages: list[schedule.Stage] = []
    if load.trace is not None:
        return None, duration_s, stages
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


def load_plan(
    case: Case,
    sched: schedule.Schedule | None,
    duration: float,
    requests: list[bytes],
    sink: Callable[[Record], engine.Sink] | None = None,
    adapter: Callable[[], engine.Adapter] | None = None,
) -> engine.LoadPlan:
    """The engine's plan of a case: its load shape and timeouts around the requests (or adapter)."""
    w, load = case.recipe.workload, case.load
    assert not isinstance(load.rate, list)  # resolved by the sweep
    return engine.LoadPlan(
        requests=requests,
        stream=w.stream,
        mode=load.mode,
        concurrency=case.concurrency,
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
        setup_timeout_s=w.timeouts.setup_s,
        max_frame_bytes=parse_bytes(w.max_frame_bytes),
        sink=sink,
        adapter=adapter,
        routing=case.recipe.service.routing if case.recipe.service is not None else "least-outstanding",
        checkpoint_s=w.checkpoint_s,
    )


def adapter_plan(
    case: Case, duration_s: float | None, adapter: Callable[[], engine.Adapter], info: dict[str, Any]
) -> Planned:
    """A protocol spoken by a client library: the engine schedules, the adapter makes each call."""
    w, load = case.recipe.workload, case.load
    duration = w.duration_s if duration_s is None else duration_s
    sched, duration, stages = schedule_for(load, w.warmup_s, duration)
    if load.trace is not None:
        raise PlanError(f"{case.recipe.name}: workload.load.trace replays HTTP requests; {w.protocol} has none")
    return Planned(load_plan(case, sched, duration, [], adapter=adapter), info, stages)


def url_path(endpoint: Endpoint) -> str:
    """The path the service's URL starts with (a server behind a proxy at ``/llm``), without the last ``/``."""
    return urlsplit(endpoint.url).path.rstrip("/")


def json_headers(case: Case, endpoint: Endpoint | None, stream_type: str = "text/event-stream") -> dict[str, str]:
    """A JSON API's request headers: the body's type, what is accepted back (``stream_type`` when the
    workload streams) and a bearer token: the one named by ``workload.api_key_env``, else the key of the
    deployment (``service.api_key_env``); read now and never stored."""
    w = case.recipe.workload
    headers = {"Content-Type": "application/json", "Accept": stream_type if w.stream else "application/json"}
    if endpoint is not None and not w.api_key_env:
        headers |= keys.bearer(endpoint.key_file)
    if w.api_key_env:
        key = os.environ.get(w.api_key_env)
        where = f"{case.recipe.name}: workload.api_key_env"
        if not key:
            raise PlanVariableMissing(f"{where} names {w.api_key_env}, which is not set")
        if header_problem("Authorization", key) is not None:
            raise PlanVariableMissing(f"{where}: {w.api_key_env} holds a value no HTTP header can carry (a line "
                                      "break, or characters beyond Latin-1)")  # fmt: skip
        headers["Authorization"] = f"Bearer {key}"
    return headers
