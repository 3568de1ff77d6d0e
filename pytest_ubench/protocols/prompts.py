"""Prompts for the protocols that send them (chat, completions, embeddings, Ollama): synthetic prompts cut
to exact token counts by the server's own tokenizer where it has one, prompt files, or a trace replayed
with its own arrival times. Files named by a recipe are read relative to the recipe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from loguru import logger

from ..load import dataset, engine, schedule
from ..load.http import build_request
from ..load.planning import PlanError, Planned, load_plan, resolve_path, schedule_for
from ..load.tokenizer import NoTokenizer, ServerTokenizer
from ..metrics.records import Record
from ..orchestrators import keys
from ..orchestrators.base import Endpoint
from ..recipes.schema import Dataset, TokenLength
from ..recipes.sweep import Case


def lengths(spec: TokenLength) -> dataset.Lengths:
    if isinstance(spec, int):
        return dataset.Lengths("fixed", float(spec), min=spec, max=spec)
    return dataset.Lengths(spec.dist, spec.mean, spec.std, spec.min, spec.max)


def prompts_for(case: Case, endpoint: Endpoint) -> tuple[list[dataset.Prompt], dict[str, Any]]:
    d: Dataset = case.recipe.workload.dataset
    try:
        if d.kind == "jsonl":
            assert d.path is not None
            prompts = dataset.read_prompts(resolve_path(case, d.path), d.prompts)
            info: dict[str, Any] = {"kind": d.kind, "path": d.path, "token_counts": "as written"}
        elif d.kind == "sharegpt":
            assert d.path is not None
            prompts = dataset.read_sharegpt(resolve_path(case, d.path), d.prompts)
            info = {"kind": d.kind, "path": d.path, "token_counts": "as written"}
        else:
            prompts = dataset.synthetic(
                d.prompts, lengths(d.prompt_tokens), lengths(d.output_tokens), d.seed, case.prompt_stream
            )
            prompts, counted = _exact_lengths(prompts, case, endpoint)
            info = {"kind": d.kind, "token_counts": counted}
    except dataset.DatasetError as exc:
        raise PlanError(f"{case.recipe.name}: workload.dataset: {exc}") from None
    if d.unique_prefix:
        prompts = dataset.with_unique_prefix(prompts, d.seed, case.prompt_stream)
    info |= {"prompts": len(prompts), "unique_prefix": d.unique_prefix}
    return prompts, info


def _exact_lengths(prompts: list[dataset.Prompt], case: Case, endpoint: Endpoint) -> tuple[list[dataset.Prompt], str]:
    """Synthetic prompts cut to exact token counts by the server's tokenizer, where it has one."""
    d = case.recipe.workload.dataset
    if d.token_counts == "approximate":
        return prompts, "approximate (one character per token)"
    w = case.recipe.workload
    tok = ServerTokenizer(endpoint.url, w.model, w.timeouts.side_s, keys.bearer(endpoint.key_file))
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
        logger.warning("{}: prompt lengths approximate (one character per token): {}", case.id, exc)
        return prompts, "approximate (one character per token)"
    finally:
        tok.close()


@dataclass
class Prompted:
    """The prompts of a case and when they are sent (``arrivals`` None: the engine's own, from the load)."""

    prompts: list[dataset.Prompt]
    dataset: dict[str, Any]
    arrivals: schedule.Schedule | None
    duration_s: float
    stages: list[schedule.Stage]


def replay(case: Case) -> Prompted | None:
    """The case's trace (``workload.load.trace``): its prompts sent at its own times; None without one."""
    w, load = case.recipe.workload, case.load
    if load.trace is None:
        return None
    try:
        times, prompts = dataset.read_trace(resolve_path(case, load.trace.path))
    except dataset.DatasetError as exc:
        raise PlanError(f"{case.recipe.name}: workload.load.trace: {exc}") from None
    times = times / load.trace.speed  # the first warmup_s seconds of the trace are the warm-up
    info = {"kind": "trace", "path": load.trace.path, "speed": load.trace.speed, "prompts": len(prompts)}
    return Prompted(prompts, info, schedule.build(times), max(float(times[-1]) - w.warmup_s, 0.0) + 1e-3, [])


def prompted(case: Case, endpoint: Endpoint, duration_s: float | None) -> Prompted:
    """A case's prompts and arrivals: from the dataset with the load's shape, or a trace's own."""
    if (trace := replay(case)) is not None:
        return trace
    w = case.recipe.workload
    prompts, info = prompts_for(case, endpoint)
    sched, duration, stages = schedule_for(case.load, w.warmup_s, w.duration_s if duration_s is None else duration_s)
    return Prompted(prompts, info, sched, duration, stages)


def unprompted(case: Case, duration_s: float | None) -> Prompted:
    """Arrivals for fixed requests (no prompts, no tokenizer to ask): the load's shape, or a trace's
    times (its prompts unused)."""
    if (trace := replay(case)) is not None:
        return trace
    w = case.recipe.workload
    sched, duration, stages = schedule_for(case.load, w.warmup_s, w.duration_s if duration_s is None else duration_s)
    return Prompted([], {"kind": "none", "prompts": 0}, sched, duration, stages)


Body = Callable[[str, str, dataset.Prompt, int, bool, dict[str, Any]], bytes]  # protocol, model, prompt, ...


def generation_plan(
    case: Case,
    endpoint: Endpoint,
    duration_s: float | None,
    body: Body,
    path: str,
    headers: dict[str, str],
    sink: Callable[[Record], engine.Sink] | None = None,
) -> Planned:
    """A generation request per prompt (chat, completions, Ollama): ``body`` builds it with an output length
    drawn per prompt (seeded), POSTed to ``path``; ``sink`` reads the answers (default: completions)."""
    w = case.recipe.workload
    got = prompted(case, endpoint, duration_s)
    outs = lengths(w.dataset.output_tokens).draw(len(got.prompts), np.random.default_rng([w.dataset.seed, 2]))
    try:
        bodies = [
            body(w.protocol, w.model, p, int(o), w.stream, w.params) for p, o in zip(got.prompts, outs, strict=True)
        ]
    except ValueError as exc:
        raise PlanError(f"{case.recipe.name}: workload.dataset: {exc}") from None
    reqs = [build_request("POST", endpoint.host, endpoint.port, path, b, headers) for b in bodies]
    return Planned(load_plan(case, got.arrivals, got.duration_s, reqs, sink=sink), got.dataset, got.stages)
