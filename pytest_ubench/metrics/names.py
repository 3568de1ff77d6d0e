"""The one list of metric names; recipes, SLOs, results and docs all use these spellings."""

from __future__ import annotations

# Per-request latency metrics (milliseconds); each is summarised with STATS.
# itl_ms: the gaps between content chunks; itl_token_ms: per token, where the server says how many tokens
# each chunk carried (a gap of k tokens counts k times, as gap / k); empty otherwise.
LATENCY_METRICS: tuple[str, ...] = ("ttft_ms", "itl_ms", "itl_token_ms", "tpot_ms", "e2e_ms", "send_lag_ms")
STATS: tuple[str, ...] = ("count", "mean", "min", "p50", "p90", "p95", "p99", "p99_9", "max")
PERCENTILES: dict[str, float] = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p99_9": 99.9}
THROUGHPUT: tuple[str, ...] = (
    "requests_per_s",
    "output_tokens_per_s",
    "goodput_requests_per_s",
    "items_per_s",  # embeddings: inputs embedded per second
    "response_bytes_per_s",
)
REQUEST_COUNTS: tuple[str, ...] = ("total", "ok", "failed", "dropped")
# Quality of answers where a protocol can score them (vector search: recall@k per query, 0..1).
QUALITY: tuple[str, ...] = ("recall",)
QUALITY_STATS: tuple[str, ...] = ("count", "mean", "min", "p50", "p90", "max")
# The server's own figures set beside the client's (Ollama reports its decode time per request).
SERVER_REPORTED: tuple[str, ...] = ("decode_tokens_per_s", "client_decode_tokens_per_s", "client_vs_server")
# Once-per-case setup phases before the load (vector collections) and their figures.
# A service run as several replicas: how many were lost during the load; over a replica sweep, the
# throughput against the smallest count's (speedup) and per replica (efficiency: 1 is linear scaling).
REPLICAS: tuple[str, ...] = ("count", "lost")
SCALING: tuple[str, ...] = ("speedup", "efficiency")
PHASES: dict[str, tuple[str, ...]] = {"create": ("seconds",), "insert": ("seconds", "vectors_per_s"),
                                      "index": ("seconds",), "truth": ("seconds",)}  # fmt: skip


def known_paths() -> set[str]:
    """Every dotted name an SLO expression may refer to."""
    paths = {f"{m}.{s}" for m in LATENCY_METRICS for s in STATS}
    paths |= {f"throughput.{t}" for t in THROUGHPUT}
    paths |= {f"requests.{c}" for c in REQUEST_COUNTS}
    paths |= {f"{q}.{s}" for q in QUALITY for s in QUALITY_STATS}
    paths |= {f"phases.{p}.{f}" for p, fields in PHASES.items() for f in fields}
    paths |= {f"server_reported.{f}" for f in SERVER_REPORTED}
    paths |= {f"replicas.{f}" for f in REPLICAS} | {f"scaling.{f}" for f in SCALING}
    paths.add("error_rate")
    return paths


# Fewest samples that support each percentile (MLPerf LoadGen's rule at 99 % confidence: p90 64, p99 662,
# p99.9 6,636; p50 and p95 follow the same ~6.6 / (1 - q) shape). Below it a percentile is reported but
# flagged as under-sampled, and an SLO on it says so (and fails with ``strict_samples: true``).
MIN_SAMPLES = {"p50": 13, "p90": 64, "p95": 132, "p99": 662, "p99_9": 6636}
