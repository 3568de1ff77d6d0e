"""The server's own account of a run beside the client's: counts that must be equal, means that must agree.

A client that did not send, receive or count what it believes shows here first: the server's counters
grow by exactly the requests and tokens it served, and its latency histograms' ``_sum``/``_count`` give
exact means (whatever their buckets). Both sides cover the whole run, warm-up included, because a
counter read at the run's start and end cannot tell the two apart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from loguru import logger

from ..metrics.columns import Records
from ..metrics.server_queries import CROSS_CHECKS, FRONT_END, CrossCheck, FrontEnd
from .prometheus import Prometheus

# A mean agrees when the client's is not below the server's (the client's clock starts before the
# server's and stops after it) and exceeds it by at most this much: what lies outside the server's own
# timer (the network, the client, and its HTTP front end where the server does not account for it itself:
# FRONT_END). Measured against vLLM on 2 cores with Prometheus beside it: TTFT +3.4 to +5.5 ms of 30-33 ms
# at 4 streams, +8.7 to +12.8 ms of 64-94 ms at 16 (docs/vllm.md).
MEAN_ABOVE_MS = 10.0
MEAN_ABOVE_SHARE = 0.25
# The server's mean may sit below the client's by timer and rounding noise only.
MEAN_BELOW_MS = 0.5


def _client(check: CrossCheck, ok: Records) -> float | None:
    """The client's figure: a count, a mean, or (nearest rank, as a histogram counts) a quantile. Latencies
    here run from the actual send, as the server's own clock does."""
    if check.client_field == "requests":
        return len(ok)
    if check.client_field in ("output_tokens", "prompt_tokens"):
        return int(np.clip(ok[check.client_field], 0, None).sum())
    if check.client_field == "ttft_ms":
        values = (ok["first"] - ok["start"]) * 1000
    elif check.client_field == "e2e_ms":
        values = (ok["end"] - ok["start"]) * 1000
    elif check.client_field == "tpot_ms":
        n = ok["output_tokens"].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = ((ok["end"] - ok["first"]) * 1000 / (n - 1))[n > 1]
    elif check.client_field == "itl_token_ms":
        values = ok.values().itl_token_ms
    else:
        raise ValueError(f"unknown client field {check.client_field!r}")
    values = np.sort(values[np.isfinite(values)])
    if not len(values):
        return None
    if check.kind == "quantile":
        assert check.q is not None
        return float(values[max(0, math.ceil(check.q * len(values)) - 1)])
    return float(values.mean())


def _growth(prom: Prometheus, query: str, t0: float, t1: float) -> float | None:
    """A counter's growth from ``t0`` to ``t1``. The run starts after the target's first scrape (the watch
    waits for it), so a series absent at ``t0`` did not exist yet: a labelled child is born at its first
    use (prometheus-fastapi-instrumentator's per-handler timer in vLLM) and grew from zero."""
    before, after = prom.instant(query, t0), prom.instant(query, t1)
    return None if after is None else after - (before or 0.0)


def _bucket(
    prom: Prometheus, check: CrossCheck, job: str, t0: float, t1: float
) -> tuple[str, tuple[float, float] | None]:
    """The bucket (lower, upper bound in ms) of the histogram's growth over the run that holds its ``q``
    quantile; None without requests."""
    query = f'sum by (le) ({check.series}_bucket{{job=~"{job}"}})'
    before, after = prom.instant_by(query, t0, "le"), prom.instant_by(query, t1, "le")
    grown = sorted((float(le), count - before.get(le, 0.0)) for le, count in after.items())
    if not grown or grown[-1][1] <= 0:
        return query, None
    assert check.q is not None
    need, lower = check.q * grown[-1][1], 0.0
    for upper, cumulative in grown:
        if cumulative >= need:
            return query, (lower * 1000, upper * 1000)
        lower = upper
    return query, None


def _total(series: str, job: str, labels: str = "") -> str:
    return f'sum({series}{{job=~"{job}"{", " + labels if labels else ""}}})'


def _mean(prom: Prometheus, series: str, labels: str, job: str, t0: float, t1: float) -> tuple[str, float | None]:
    """A histogram's mean (ms) over the run, from its ``_sum`` and ``_count`` growth."""
    sum_q, count_q = _total(series + "_sum", job, labels), _total(series + "_count", job, labels)
    grown_sum, grown_count = _growth(prom, sum_q, t0, t1), _growth(prom, count_q, t0, t1)
    return f"{sum_q} / {count_q}", None if not grown_count or grown_sum is None else grown_sum / grown_count * 1000


def _server(prom: Prometheus, check: CrossCheck, job: str, t0: float, t1: float) -> tuple[str, float | None]:
    if check.kind == "count":
        query = _total(check.series, job)
        return query, _growth(prom, query, t0, t1)
    return _mean(prom, check.series, "", job, t0, t1)


def _front_end(prom: Prometheus, front: FrontEnd, job: str, t0: float, t1: float) -> float | None:
    """The server's own account of its front end's time a request (ms): never below zero, None where the
    server has no such timer (an older vLLM, a front end without the instrumentator)."""
    try:
        _, outer = _mean(prom, front.outer, front.outer_labels, job, t0, t1)
        _, inner = _mean(prom, front.inner, "", job, t0, t1)
    except Exception as exc:  # the checks stand without it, at the fixed margin
        logger.warning("front-end share ({}) failed: {}", front.outer, exc)
        return None
    return None if outer is None or inner is None else max(0.0, outer - inner)


def _by_instance(prom: Prometheus, check: CrossCheck, job: str, t0: float, t1: float) -> dict[str, float] | None:
    """A counter's growth per scraped instance, where the job has several (a service's replicas)."""
    query = f'sum by (instance) ({check.series}{{job=~"{job}"}})'
    try:
        before, after = prom.instant_by(query, t0, "instance"), prom.instant_by(query, t1, "instance")
    except Exception as exc:  # the total stands without it
        logger.warning("cross-check {} by instance failed: {}", check.name, exc)
        return None
    if len(after) < 2:
        return None
    return {instance: value - before.get(instance, 0.0) for instance, value in sorted(after.items())}


def _agrees(check: CrossCheck, client: float | None, server: float | None, front_end: float) -> bool | None:
    if client is None or server is None:
        return None
    if check.kind == "count":
        return client == server
    return -MEAN_BELOW_MS <= client - server <= max(MEAN_ABOVE_MS, MEAN_ABOVE_SHARE * server) + front_end


def _within(
    client: float | None, bucket: tuple[float, float] | None, mean: float | None, front_end: float
) -> bool | None:
    """A quantile agrees when the client's lies in the server's bucket, widened by the margin of the same
    histogram's mean check (``mean``: the server's mean, ms), or of the bucket's top where there is none.
    What lies outside the server's timer (its front end queueing requests, the client) is added to each
    request by the load, not in proportion to where that request falls: a bucket's top as the base gave a
    low quantile a narrower margin than the mean's (seen: vLLM at 16 streams, TTFT p50 78.5 ms against
    (40, 60] failed by 3.5 ms while the means differed by 13.3 ms of the 20.8 allowed). An open top
    bucket (``+Inf``) resolves nothing."""
    if client is None or bucket is None or not math.isfinite(bucket[1]):
        return None
    lower, upper = bucket
    return lower - MEAN_BELOW_MS < client <= upper + max(MEAN_ABOVE_MS, MEAN_ABOVE_SHARE * (mean or upper)) + front_end


def cross_checks(
    prom: Prometheus, query_sets: Sequence[str], job: str, records: Records, t0: float
) -> tuple[dict[str, dict[str, Any]], bool]:
    """Every check of the recipe's query sets from ``t0`` (epoch) until now; and whether all could be read."""
    ok = records.take(records.ok)
    t1 = time.time()
    out: dict[str, dict[str, Any]] = {}
    means: dict[str, float] = {}  # a histogram's server mean (ms), for its quantile checks' margin
    complete = True
    fronts = {s: _front_end(prom, FRONT_END[s], job, t0, t1) for s in query_sets if s in FRONT_END}
    for query_set, check in ((s, c) for s in query_sets for c in CROSS_CHECKS.get(s, [])):
        bucket: tuple[float, float] | None = None
        try:
            if check.kind == "quantile":
                query, bucket = _bucket(prom, check, job, t0, t1)
                server = bucket[1] if bucket is not None and math.isfinite(bucket[1]) else None
            else:
                query, server = _server(prom, check, job, t0, t1)
        except Exception as exc:  # a failed query makes the data incomplete, never the run
            complete = False
            logger.warning("cross-check {} failed: {}", check.name, exc)
            continue
        client = _client(check, ok)
        entry: dict[str, Any] = {"kind": check.kind, "counter": query, "client_field": check.client_field,
                                 "client": client, "server": server}  # fmt: skip
        front_end = 0.0
        if check.inside_front_end:
            entry["front_end_ms"] = fronts.get(query_set)
            front_end = entry["front_end_ms"] or 0.0
        if check.kind == "quantile":
            resolved = bucket is not None and server is not None  # not the open top bucket
            entry |= {"q": check.q, "server_bucket": list(bucket) if bucket and resolved else None,
                      "relative_difference": None,
                      "agrees": _within(client, bucket, means.get(check.series), front_end)}  # fmt: skip
        else:
            if check.kind == "mean" and server is not None:
                means[check.series] = server
            entry |= {
                "difference": None if client is None or server is None else client - server,
                "relative_difference": None if not server or client is None else abs(client - server) / server,
                "agrees": _agrees(check, client, server, front_end),
            }
            if check.kind == "count" and (each := _by_instance(prom, check, job, t0, t1)):
                entry["by_instance"] = each  # a service's replicas, each its own count
        out[check.name] = entry
        if entry["agrees"] is False:
            logger.warning("cross-check {}: client {} vs server {}", check.name, client, bucket or server)
    return out, complete
