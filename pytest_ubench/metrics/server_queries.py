"""Named PromQL queries: built-in sets per server kind, evaluated over a case's load window.

``$rate`` in a query is replaced by a rate window of four scrape intervals (at least 4 s), so
rates have enough samples whatever the interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

QUERY_SETS: dict[str, dict[str, str]] = {
    "llamacpp": {
        "requests_processing": "llamacpp:requests_processing",
        "requests_deferred": "llamacpp:requests_deferred",
        "busy_slots_per_decode": "llamacpp:n_busy_slots_per_decode",
        "prompt_tokens_per_s": "rate(llamacpp:prompt_tokens_total[$rate])",
        "output_tokens_per_s": "rate(llamacpp:tokens_predicted_total[$rate])",
    },
    # vLLM renamed series between versions: each query accepts the old and the new name.
    "vllm": {
        "num_requests_running": "sum(vllm:num_requests_running)",
        "num_requests_waiting": "sum(vllm:num_requests_waiting)",
        "kv_cache_usage": "max(vllm:kv_cache_usage_perc) or max(vllm:gpu_cache_usage_perc)",
        "ttft_p95_s": "histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[$rate])))",
        "output_tokens_per_s": "sum(rate(vllm:generation_tokens_total[$rate]))",
        "requests_per_s": "sum(rate(vllm:request_success_total[$rate]))",
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


@dataclass(frozen=True)
class CrossCheck:
    """A server counter that must grow by what the client counted over the whole run."""

    counter: str
    client_field: str  # "output_tokens" or "requests"


CROSS_CHECKS: dict[str, CrossCheck] = {
    "llamacpp": CrossCheck("sum(llamacpp:tokens_predicted_total)", "output_tokens"),
    "vllm": CrossCheck("sum(vllm:request_success_total)", "requests"),
}

STATS = ("min", "mean", "max", "last")


def resolve(query_sets: Sequence[str], queries: dict[str, str], interval_s: float) -> dict[str, str]:
    """All named queries of a recipe, ``$rate`` filled in; the recipe's own names win."""
    rate = f"{max(4 * interval_s, 4.0):g}s"
    named: dict[str, str] = {}
    for name in query_sets:
        named.update(QUERY_SETS[name])
    named.update(queries)
    return {name: q.replace("$rate", rate) for name, q in named.items()}
