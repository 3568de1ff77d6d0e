"""A service run as replicas: each replica's figures beside the whole's, the replicas lost during the load,
and how throughput grows with the count (speedup and efficiency against the sweep's smallest count)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .columns import Records
from .stats import summary

# The figures kept per replica (of those a summary has): enough to see one replica lagging the others.
_LATENCY = ("ttft_ms", "e2e_ms")
_PERCENTILES = ("p50", "p99")


def per_replica(
    records: Records,
    window_start: float,
    window_end: float,
    urls: Sequence[str],
    lost: dict[int, float | None],
    routing: str,
) -> dict[str, Any]:
    """The ``replicas`` part of a result. ``records``: the measured ones, each naming its replica;
    ``lost``: replica -> seconds after the load started that a client found it dead (None: the orchestrator
    found it ended, no client noticed)."""
    each = []
    for index, url in enumerate(urls):
        part = summary(records.take(records["replica"] == index), window_start, window_end)
        req, thr, lat = part["requests"], part["throughput"], part["metrics"]
        each.append(
            {
                "replica": index,
                "url": url,
                "requests": {k: req[k] for k in ("total", "ok", "failed")} | {"errors": req["errors"]},
                "throughput": {k: thr[k] for k in ("requests_per_s", "output_tokens_per_s", "items_per_s")},
                **{m: {p: lat[m][p] for p in _PERCENTILES} for m in _LATENCY},
                "lost_at_s": lost.get(index) if index in lost else None,
                "counted_by": "client",
            }
        )
    return {"count": len(urls), "routing": routing, "lost": len(lost), "per_replica": each}


def per_replica_from_front(
    counts: Sequence[dict[str, int]], urls: Sequence[str], elapsed_s: float, lost: dict[int, float | None], routing: str
) -> dict[str, Any]:
    """The ``replicas`` part when a load balancer spread the requests: the clients saw only it, so each
    replica's requests are the balancer's own account (its access log, over the whole run, warm-up
    included); latencies per replica are not known."""
    each = []
    for index, (url, n) in enumerate(zip(urls, counts, strict=True)):
        each.append(
            {
                "replica": index,
                "url": url,
                "requests": {"total": n["total"], "ok": n["ok"], "failed": n["total"] - n["ok"], "errors": {}},
                "throughput": {
                    "requests_per_s": n["ok"] / elapsed_s if elapsed_s > 0 else 0.0,
                    "output_tokens_per_s": None,
                    "items_per_s": None,
                },
                **{m: dict.fromkeys(_PERCENTILES) for m in _LATENCY},
                "lost_at_s": None,
                "counted_by": "front",
            }
        )
    return {"count": len(urls), "routing": f"front: {routing}", "lost": len(lost), "per_replica": each}


def figure_of(result_summary: dict[str, Any]) -> str:
    """The throughput scaling is judged on: output tokens where the service makes them, else requests."""
    return "output_tokens_per_s" if result_summary["throughput"].get("output_tokens", 0) else "requests_per_s"


def efficiency(replicas: int, measured: dict[str, Any], reference_replicas: int, reference: dict[str, Any],
               reference_case: str) -> dict[str, Any]:  # fmt: skip
    """``throughput(N) / (N / N0 * throughput(N0))``, N0 the sweep's smallest count (1 when the sweep has
    it: the issue's ``throughput(N) / (N * throughput(1))``)."""
    figure = figure_of(reference)
    base = float(reference["throughput"][figure])
    got = float(measured["throughput"][figure])
    speedup = got / base if base > 0 else None
    return {
        "replicas": replicas,
        "reference_replicas": reference_replicas,
        "reference_case": reference_case,
        "of": figure,
        "throughput": got,
        "reference_throughput": base,
        "speedup": speedup,
        "efficiency": speedup * reference_replicas / replicas if speedup is not None else None,
    }
