"""From records to the published figures; formulas are documented in docs/metrics.md.

Percentiles use linear interpolation between closest ranks (numpy's default, "type 7"), the same
definition as most tools, so figures can be compared across tools without a footnote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .columns import Records
from .names import LATENCY_METRICS, MIN_SAMPLES, PERCENTILES


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


def latency_metrics(records: Records) -> dict[str, dict[str, float | int | None]]:
    values = records.values()
    return {name: summarize(values.series(name)) for name in LATENCY_METRICS}


def meeting(records: Records, bounds: Sequence[tuple[str, float]]) -> np.ndarray:
    """Which requests met every per-request latency bound (for goodput); an ITL bound is met when a
    request's worst gap is."""
    good = records.ok.copy()
    if not bounds:
        return good
    values = records.values()
    for metric, limit in bounds:
        v = values.worst(metric, len(records))
        with np.errstate(invalid="ignore"):
            good &= v <= limit  # NaN (no such value) never meets a bound
    return good


def summary(
    records: Records, window_start: float, window_end: float, bounds: Sequence[tuple[str, float]] = ()
) -> dict[str, Any]:
    """The ``requests``, ``metrics`` and ``throughput`` parts of a result.

    ``records`` are the measured ones (warm-up excluded). Throughput divides by the time from the
    window start to the later of the window end and the last measured completion, since requests
    sent inside the window are all awaited. Arrivals dropped by an open loop's ``max_in_flight`` were
    never sent: counted apart (k6's dropped_iterations), not as failures.
    """
    dropped_code = records.code("error", "dropped")
    dropped = int(np.count_nonzero(records["error"] == dropped_code)) if dropped_code > 0 else 0
    if dropped:
        records = records.take(records["error"] != dropped_code)
    rows = records.rows
    ok_mask = records.ok
    ok, failed = records.take(ok_mask), records.take(~ok_mask)
    ends = rows["end"][~np.isnan(rows["end"])]
    last = float(ends.max()) + records.t0 if len(ends) else window_end
    elapsed = max(window_end, last) - window_start
    out_tokens = int(np.clip(ok["output_tokens"], 0, None).sum())
    items = int(ok["items"].sum())
    nbytes = int(ok["nbytes"].sum())
    good = int(np.count_nonzero(meeting(records, bounds)))
    total = len(records)
    n_ok, n_failed = len(ok), len(failed)
    sources = {k: v for k, v in records.counts("tokens_from", ok_mask).items() if k}
    out: dict[str, Any] = {
        "requests": {
            "total": total,
            "ok": n_ok,
            "failed": n_failed,
            "dropped": dropped,
            "error_rate": (n_failed / total) if total else 0.0,
            "errors": records.counts("error", ~ok_mask),
            "output_tokens_from": sources,
        },
        "metrics": latency_metrics(ok),
        "failed_metrics": latency_metrics(failed),
        "throughput": {
            "elapsed_s": elapsed,
            "requests_per_s": n_ok / elapsed if elapsed > 0 else 0.0,
            "output_tokens_per_s": out_tokens / elapsed if elapsed > 0 else 0.0,
            "goodput_requests_per_s": good / elapsed if elapsed > 0 else 0.0,
            "items_per_s": items / elapsed if elapsed > 0 else 0.0,
            "response_bytes_per_s": nbytes / elapsed if elapsed > 0 else 0.0,
            "output_tokens": out_tokens,
        },
    }
    if not np.isnan(ok["recall"]).all():
        out["recall"] = recall_summary(ok)
    if (reported := server_reported(ok)) is not None:
        out["server_reported"] = reported
    if (rows["op"] != 0).any():
        out["ops"] = per_op(records, elapsed)
    return out


def server_reported(records: Records) -> dict[str, Any] | None:
    """The server's own decode rate (Ollama: eval_count / eval_duration) beside the client's (tokens
    after the first / time from first to last token) over the same requests; a ratio well below 1
    means tokens reached the client later than the server made them (a busy client, or buffering)."""
    rows = records.rows
    decode = rows["server_decode_s"].astype(np.float64)
    with np.errstate(invalid="ignore"):
        has = ~np.isnan(decode) & (decode > 0) & (rows["output_tokens"] > 0)
    if not has.any():
        return None
    server = float(rows["output_tokens"][has].sum()) / float(decode[has].sum())
    recs = records.take(has)
    n = recs["n_chunks"].astype(np.int64)
    streamed = n >= 2
    off = recs.chunk_offsets()
    us = recs.chunk_us.astype(np.int64)
    idx = np.flatnonzero(streamed)
    span = float((us[off[idx + 1] - 1] - us[off[idx]]).sum()) / 1e6 if len(idx) else 0.0
    client = float((n[streamed] - 1).sum()) / span if span > 0 else None
    return {"requests": int(has.sum()), "decode_tokens_per_s": server, "client_decode_tokens_per_s": client,
            "client_vs_server": client / server if client is not None else None}  # fmt: skip


def recall_summary(records: Records) -> dict[str, Any]:
    """Recall@k over the answered queries: the mean is the figure to judge; the low tail (min) shows
    the queries an index serves badly."""
    recall = records["recall"].astype(np.float64)
    out = summarize(recall[~np.isnan(recall)])
    out.pop("under_sampled")
    return out


def per_op(records: Records, elapsed: float) -> dict[str, dict[str, Any]]:
    """Per operation class (GET vs SET, each SQL statement): counts, rate and end-to-end latency."""
    out = {}
    codes = records["op"]
    for code, op in sorted(enumerate(records.names["op"]), key=lambda kv: kv[1] or ""):
        mask = codes == code
        total = int(mask.sum())
        if not total:
            continue
        ok = records.take(mask & records.ok)
        out[op or ""] = {
            "total": total,
            "ok": len(ok),
            "error_rate": (total - len(ok)) / total,
            "per_s": len(ok) / elapsed if elapsed > 0 else 0.0,
            "bytes_per_s": int(ok["nbytes"].sum()) / elapsed if elapsed > 0 else 0.0,
            "latency_ms": summarize((ok["end"] - ok["intended"]) * 1000.0),
        }
        if not np.isnan(ok["recall"]).all():
            out[op or ""]["recall"] = recall_summary(ok)["mean"]
    return out


def pooled(
    summaries: Sequence[dict[str, Any]], records: Records, bounds: Sequence[tuple[str, float]] = ()
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
    items = int(records["items"][records.ok].sum())
    nbytes = int(records["nbytes"][records.ok].sum())
    t |= {
        "elapsed_s": elapsed,
        "requests_per_s": ok / elapsed if elapsed > 0 else 0.0,
        "items_per_s": items / elapsed if elapsed > 0 else 0.0,
        "response_bytes_per_s": nbytes / elapsed if elapsed > 0 else 0.0,
        "output_tokens_per_s": t["output_tokens"] / elapsed if elapsed > 0 else 0.0,
        "goodput_requests_per_s": good / elapsed if elapsed > 0 else 0.0,
    }
    return out
