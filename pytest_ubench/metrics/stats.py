"""From records to the published figures; formulas are documented in docs/metrics.md.

Percentiles use linear interpolation between closest ranks (numpy's default, "type 7"), the same
definition as most tools, so figures can be compared across tools without a footnote.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .names import LATENCY_METRICS, MIN_SAMPLES, PERCENTILES
from .records import Record


def summarize(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"count": 0} | dict.fromkeys(("mean", "min", *PERCENTILES, "max")) | {"under_sampled": list(MIN_SAMPLES)}
    qs = np.percentile(arr, list(PERCENTILES.values()))
    out: dict[str, Any] = {"count": int(arr.size), "mean": float(arr.mean()), "min": float(arr.min())}
    out |= {name: float(q) for name, q in zip(PERCENTILES, qs, strict=True)}
    out["max"] = float(arr.max())
    out["under_sampled"] = [name for name, need in MIN_SAMPLES.items() if arr.size < need]
    return out


def request_values(rec: Record) -> dict[str, Any]:
    """Per-request figures in ms; ``itl_ms`` is a list (one gap per pair of chunks), ``itl_token_ms`` one
    (one value per token after the first chunk's) when the chunks' token counts are known."""
    base = rec.intended
    e2e = (rec.end - base) * 1000.0
    ttft = (rec.first - base) * 1000.0 if not math.isnan(rec.first) else None
    chunks = rec.chunks
    itl = [(b - a) * 1000.0 for a, b in itertools.pairwise(chunks)]
    per_token: list[float] = []
    if len(rec.chunk_tokens) == len(chunks):
        for gap, (k0, k1) in zip(itl, itertools.pairwise(rec.chunk_tokens), strict=True):
            if k1 > k0:
                per_token += [gap / (k1 - k0)] * (k1 - k0)
    tpot = None
    if ttft is not None and rec.output_tokens and rec.output_tokens > 1:
        tpot = (e2e - ttft) / (rec.output_tokens - 1)
    lag = (rec.start - rec.intended) * 1000.0 if not math.isnan(rec.start) else None
    return {"ttft_ms": ttft, "itl_ms": itl, "itl_token_ms": per_token, "tpot_ms": tpot, "e2e_ms": e2e,
            "send_lag_ms": lag}  # fmt: skip


def latency_metrics(records: Iterable[Record]) -> dict[str, dict[str, float | int | None]]:
    series: dict[str, list[float]] = {m: [] for m in LATENCY_METRICS}
    for rec in records:
        values = request_values(rec)
        for name in LATENCY_METRICS:
            v = values[name]
            if isinstance(v, list):
                series[name].extend(v)
            elif v is not None:
                series[name].append(v)
    return {name: summarize(vals) for name, vals in series.items()}


def meets(rec: Record, bounds: Sequence[tuple[str, float]]) -> bool:
    """Whether one request met every per-request latency bound (for goodput)."""
    if not rec.ok:
        return False
    values = request_values(rec)
    for metric, limit in bounds:
        v = values[metric]
        if isinstance(v, list):
            v = max(v) if v else None  # a request meets an ITL bound when its worst gap does
        if v is None or v > limit:
            return False
    return True


def summary(
    records: Sequence[Record], window_start: float, window_end: float, bounds: Sequence[tuple[str, float]] = ()
) -> dict[str, Any]:
    """The ``requests``, ``metrics`` and ``throughput`` parts of a result.

    ``records`` are the measured ones (warm-up excluded). Throughput divides by the time from the
    window start to the later of the window end and the last measured completion, since requests
    sent inside the window are all awaited. Arrivals dropped by an open loop's ``max_in_flight`` were
    never sent: counted apart (k6's dropped_iterations), not as failures.
    """
    dropped = sum(1 for r in records if r.error == "dropped")
    if dropped:
        records = [r for r in records if r.error != "dropped"]
    ok = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    last = max((r.end for r in records if not math.isnan(r.end)), default=window_end)
    elapsed = max(window_end, last) - window_start
    out_tokens = sum(r.output_tokens or 0 for r in ok)
    items = sum(r.items for r in ok)
    nbytes = sum(r.nbytes for r in ok)
    good = sum(1 for r in records if meets(r, bounds))
    total = len(records)
    sources = Counter(r.tokens_from for r in ok if r.tokens_from)  # none for protocols without tokens
    out: dict[str, Any] = {
        "requests": {
            "total": total,
            "ok": len(ok),
            "failed": len(failed),
            "dropped": dropped,
            "error_rate": (len(failed) / total) if total else 0.0,
            "errors": dict(Counter(r.error for r in failed)),
            "output_tokens_from": dict(sources),
        },
        "metrics": latency_metrics(ok),
        "failed_metrics": latency_metrics(failed),
        "throughput": {
            "elapsed_s": elapsed,
            "requests_per_s": len(ok) / elapsed if elapsed > 0 else 0.0,
            "output_tokens_per_s": out_tokens / elapsed if elapsed > 0 else 0.0,
            "goodput_requests_per_s": good / elapsed if elapsed > 0 else 0.0,
            "items_per_s": items / elapsed if elapsed > 0 else 0.0,
            "response_bytes_per_s": nbytes / elapsed if elapsed > 0 else 0.0,
            "output_tokens": out_tokens,
        },
    }
    if any(not math.isnan(r.recall) for r in ok):
        out["recall"] = recall_summary(ok)
    if (reported := server_reported(ok)) is not None:
        out["server_reported"] = reported
    if any(r.op for r in records):
        out["ops"] = per_op(records, elapsed)
    return out


def server_reported(records: Sequence[Record]) -> dict[str, Any] | None:
    """The server's own decode rate (Ollama: eval_count / eval_duration) beside the client's (tokens
    after the first / time from first to last token) over the same requests; a ratio well below 1
    means tokens reached the client later than the server made them (a busy client, or buffering)."""
    recs = [r for r in records if not math.isnan(r.server_decode_s) and r.server_decode_s > 0 and r.output_tokens]
    if not recs:
        return None
    server = sum(r.output_tokens or 0 for r in recs) / sum(r.server_decode_s for r in recs)
    streamed = [r for r in recs if len(r.chunks) >= 2]
    span = sum(r.chunks[-1] - r.chunks[0] for r in streamed)
    client = sum(len(r.chunks) - 1 for r in streamed) / span if span > 0 else None
    return {"requests": len(recs), "decode_tokens_per_s": server, "client_decode_tokens_per_s": client,
            "client_vs_server": client / server if client is not None else None}  # fmt: skip


def recall_summary(records: Iterable[Record]) -> dict[str, Any]:
    """Recall@k over the answered queries: the mean is the figure to judge; the low tail (min) shows
    the queries an index serves badly."""
    out = summarize([r.recall for r in records if not math.isnan(r.recall)])
    out.pop("under_sampled")
    return out


def per_op(records: Sequence[Record], elapsed: float) -> dict[str, dict[str, Any]]:
    """Per operation class (GET vs SET, each SQL statement): counts, rate and end-to-end latency."""
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.op, []).append(r)
    out = {}
    for op, recs in sorted(groups.items()):
        ok = [r for r in recs if r.ok]
        out[op] = {
            "total": len(recs),
            "ok": len(ok),
            "error_rate": (len(recs) - len(ok)) / len(recs),
            "per_s": len(ok) / elapsed if elapsed > 0 else 0.0,
            "bytes_per_s": sum(r.nbytes for r in ok) / elapsed if elapsed > 0 else 0.0,
            "latency_ms": summarize([(r.end - r.intended) * 1000.0 for r in ok]),
        }
        if any(not math.isnan(r.recall) for r in ok):
            out[op]["recall"] = recall_summary(ok)["mean"]
    return out


def pooled(
    summaries: Sequence[dict[str, Any]], records: Sequence[Record], bounds: Sequence[tuple[str, float]] = ()
) -> dict[str, Any]:
    """One summary over repeated runs: latency over every measured request, throughput over the
    summed load windows (the gaps between repeats are not load time)."""
    out = summary(records, 0.0, 0.0, bounds)
    elapsed = sum(s["throughput"]["elapsed_s"] for s in summaries)
    t = out["throughput"]
    ok, good = (
        out["requests"]["ok"],
        sum(s["throughput"]["goodput_requests_per_s"] * s["throughput"]["elapsed_s"] for s in summaries),
    )
    items = sum(r.items for r in records if r.ok)
    nbytes = sum(r.nbytes for r in records if r.ok)
    t |= {
        "elapsed_s": elapsed,
        "requests_per_s": ok / elapsed if elapsed > 0 else 0.0,
        "items_per_s": items / elapsed if elapsed > 0 else 0.0,
        "response_bytes_per_s": nbytes / elapsed if elapsed > 0 else 0.0,
        "output_tokens_per_s": t["output_tokens"] / elapsed if elapsed > 0 else 0.0,
        "goodput_requests_per_s": good / elapsed if elapsed > 0 else 0.0,
    }
    return out
