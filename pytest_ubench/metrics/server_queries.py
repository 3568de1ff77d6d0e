"""Named PromQL queries: built-in sets per server kind, evaluated over a case's load window.

``$rate`` in a query is replaced by a rate window of four scrape intervals (at least 4 s), so
rates have enough samples whatever the interval. ``$job`` is replaced by the scrape job(s) of the service
being measured, as a regular expression for ``job=~"$job"``: one Prometheus may scrape several servers of
one kind (a monitor watching two services, a session with two recipes), and a query that is not held to
its service's job mixes their series into one wrong number.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

QUERY_SETS: dict[str, dict[str, str]] = {
    "llamacpp": {
        "requests_processing": 'sum(llamacpp:requests_processing{job=~"$job"})',
        "requests_deferred": 'sum(llamacpp:requests_deferred{job=~"$job"})',
        "busy_slots_per_decode": 'avg(llamacpp:n_busy_slots_per_decode{job=~"$job"})',
        "prompt_tokens_per_s": 'sum(rate(llamacpp:prompt_tokens_total{job=~"$job"}[$rate]))',
        "output_tokens_per_s": 'sum(rate(llamacpp:tokens_predicted_total{job=~"$job"}[$rate]))',
    },
    # vLLM renamed series between versions: a query takes the new name or the old one ("or").
    "vllm": {
        "num_requests_running": 'sum(vllm:num_requests_running{job=~"$job"})',
        "num_requests_waiting": 'sum(vllm:num_requests_waiting{job=~"$job"})',
        "kv_cache_usage": 'max(vllm:kv_cache_usage_perc{job=~"$job"}) or max(vllm:gpu_cache_usage_perc{job=~"$job"})',
        "prefix_cache_hit_rate": (
            'sum(rate(vllm:prefix_cache_hits_total{job=~"$job"}[$rate]))'
            ' / sum(rate(vllm:prefix_cache_queries_total{job=~"$job"}[$rate]))'
            ' or max(vllm:gpu_prefix_cache_hit_rate{job=~"$job"})'
        ),
        "preemptions_per_s": 'sum(rate(vllm:num_preemptions_total{job=~"$job"}[$rate]))',
        "requests_per_s": 'sum(rate(vllm:request_success_total{job=~"$job"}[$rate]))',
        "prompt_tokens_per_s": 'sum(rate(vllm:prompt_tokens_total{job=~"$job"}[$rate]))',
        "output_tokens_per_s": 'sum(rate(vllm:generation_tokens_total{job=~"$job"}[$rate]))',
        "ttft_p95_s": (
            'histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{job=~"$job"}[$rate])))'
        ),
        # Means from _sum/_count: exact whatever the buckets (TPOT/ITL buckets start at 10 ms, E2E at 300 ms).
        "ttft_mean_s": "$mean(vllm:time_to_first_token_seconds)",
        "itl_mean_s": "$mean(vllm:inter_token_latency_seconds) or $mean(vllm:time_per_output_token_seconds)",
        "tpot_mean_s": "$mean(vllm:request_time_per_output_token_seconds)",
        "e2e_mean_s": "$mean(vllm:e2e_request_latency_seconds)",
        "queue_time_mean_s": "$mean(vllm:request_queue_time_seconds)",
        "prefill_time_mean_s": "$mean(vllm:request_prefill_time_seconds)",
        "decode_time_mean_s": "$mean(vllm:request_decode_time_seconds)",
    },
    "node": {
        "cpu_busy": '1 - avg(rate(node_cpu_seconds_total{mode="idle"}[$rate]))',
        "memory_used_bytes": "sum(node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes)",
        "network_rx_bytes_per_s": 'sum(rate(node_network_receive_bytes_total{device!="lo"}[$rate]))',
        "network_tx_bytes_per_s": 'sum(rate(node_network_transmit_bytes_total{device!="lo"}[$rate]))',
    },
    "dcgm": {
        "gpu_utilization": "avg(DCGM_FI_DEV_GPU_UTIL)",
        "gpu_memory_used_bytes": "sum(DCGM_FI_DEV_FB_USED) * 1024 * 1024",
        "gpu_power_watts": "sum(DCGM_FI_DEV_POWER_USAGE)",
    },
}


# The load client's own live series (monitor/client_metrics.py), shown beside the server's.
CLIENT: dict[str, str] = {
    "client_requests_per_s": "sum(rate(ubench_requests_completed_total[$rate]))",
    "client_errors_per_s": 'sum(rate(ubench_requests_completed_total{outcome="error"}[$rate]))',
    "client_in_flight": "sum(ubench_requests_in_flight)",
    "client_ttft_p95_s": "histogram_quantile(0.95, sum by (le) (rate(ubench_ttft_seconds_bucket[$rate])))",
    "client_e2e_p95_s": "histogram_quantile(0.95, sum by (le) (rate(ubench_e2e_seconds_bucket[$rate])))",
}


def duration(seconds: float) -> str:
    """A PromQL/config duration: whole seconds as ``5s``, others in milliseconds (``500ms``); Prometheus
    refuses ``0.5s``."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


@dataclass(frozen=True)
class CrossCheck:
    """A server figure over the whole run beside the client's own: a counter's growth (``count``, must be
    equal), a histogram's mean from its ``_sum``/``_count`` growth (``mean``, milliseconds), or the bucket
    of that histogram's growth in which its ``q`` quantile lies (``quantile``)."""

    name: str
    series: str  # a counter, or a histogram's base name
    client_field: str  # requests, output_tokens, prompt_tokens; for means and quantiles ttft_ms, e2e_ms, tpot_ms
    kind: str = "count"
    q: float | None = None  # for quantiles
    # The server's timer runs inside its HTTP front end: what that front end spends outside it (FRONT_END,
    # by the server's own two timers) is added to the margin.
    inside_front_end: bool = False


@dataclass(frozen=True)
class FrontEnd:
    """A server's own account of the time its HTTP front end adds to each request: the mean of its HTTP
    timer (``outer``, from the request reaching the web framework to the last byte written) less the mean
    of its engine's timer (``inner``) over the same requests."""

    outer: str  # a histogram's base name
    outer_labels: str
    inner: str


# vLLM's API server times each request at the framework (prometheus-fastapi-instrumentator's
# http_request_duration_seconds, streaming included), its engine from arrival to the last token. Between
# them: parsing, the chat template, tokenising, detokenising and SSE, all in one Python process that shares
# the CPUs. Measured on 2 cores: 10.8 ms a request at 16 streams; beside two CPU hogs 6.7 at 4 and 20.9 at
# 16, where the client's TTFT exceeded the engine's by 8.8 and 19.5 ms (a CI run failed the fixed margin so).
FRONT_END: dict[str, FrontEnd] = {
    "vllm": FrontEnd(
        "http_request_duration_seconds", 'handler=~"/v1/.*completions"', "vllm:e2e_request_latency_seconds"
    ),
}


CROSS_CHECKS: dict[str, list[CrossCheck]] = {
    "llamacpp": [CrossCheck("llamacpp", "llamacpp:tokens_predicted_total", "output_tokens")],
    "vllm": [
        CrossCheck("vllm", "vllm:request_success_total", "requests"),
        CrossCheck("vllm.output_tokens", "vllm:generation_tokens_total", "output_tokens"),
        CrossCheck("vllm.prompt_tokens", "vllm:prompt_tokens_total", "prompt_tokens"),
        CrossCheck("vllm.ttft_ms", "vllm:time_to_first_token_seconds", "ttft_ms", "mean", inside_front_end=True),
        CrossCheck("vllm.tpot_ms", "vllm:request_time_per_output_token_seconds", "tpot_ms", "mean"),
        CrossCheck("vllm.e2e_ms", "vllm:e2e_request_latency_seconds", "e2e_ms", "mean", inside_front_end=True),
        # per token: needs the tokens of each chunk (params: stream_options.continuous_usage_stats)
        CrossCheck("vllm.itl_token_ms", "vllm:inter_token_latency_seconds", "itl_token_ms", "mean"),
        # Quantiles as far as the buckets resolve them (TTFT's from 1 ms; E2E's from 300 ms, so coarse); after
        # the means of the same histograms, whose margin they take (monitor/cross_check.py)
        CrossCheck(
            "vllm.ttft_ms.p50", "vllm:time_to_first_token_seconds", "ttft_ms", "quantile", 0.5, inside_front_end=True
        ),
        CrossCheck(
            "vllm.ttft_ms.p90", "vllm:time_to_first_token_seconds", "ttft_ms", "quantile", 0.9, inside_front_end=True
        ),
        CrossCheck(
            "vllm.e2e_ms.p50", "vllm:e2e_request_latency_seconds", "e2e_ms", "quantile", 0.5, inside_front_end=True
        ),
        CrossCheck(
            "vllm.e2e_ms.p90", "vllm:e2e_request_latency_seconds", "e2e_ms", "quantile", 0.9, inside_front_end=True
        ),
    ],
}

STATS = ("min", "mean", "max", "last")


def jobs(names: Sequence[str]) -> str:
    """The value of ``$job`` for these scrape jobs: a regular expression matching exactly them, escaped
    again for the double-quoted PromQL string it is put in."""
    pattern = "|".join(re.escape(n) for n in names)
    return pattern.replace("\\", "\\\\").replace('"', '\\"')


def named(query_sets: Sequence[str], queries: dict[str, str], job: str) -> dict[str, str]:
    """All named queries of a recipe held to the scrape job(s) ``job`` (see ``jobs``), ``$rate`` kept
    (Grafana fills in its own); the recipe's own names win."""
    out: dict[str, str] = {}
    for name in query_sets:
        out.update(QUERY_SETS[name])
    out.update(queries)
    return {name: _means(q).replace("$job", job) for name, q in out.items()}


def _means(query: str) -> str:
    """``$mean(h)``: a histogram's mean over the rate window, from its ``_sum`` and ``_count``."""
    return re.sub(
        r"\$mean\(([a-zA-Z_:][a-zA-Z0-9_:]*)\)",
        lambda m: f'(sum(rate({m[1]}_sum{{job=~"$job"}}[$rate])) / sum(rate({m[1]}_count{{job=~"$job"}}[$rate])))',
        query,
    )


def resolve(query_sets: Sequence[str], queries: dict[str, str], interval_s: float, job: str) -> dict[str, str]:
    """``named`` with ``$rate`` filled in: four scrape intervals, at least 4 s."""
    rate = duration(max(4 * interval_s, 4.0))
    return {name: q.replace("$rate", rate) for name, q in named(query_sets, queries, job).items()}
