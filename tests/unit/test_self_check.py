"""The client's self-check tells a busy client from a busy host: late timers on a host whose CPUs were full
while the client idled are the host's, and the verdict says so instead of blaming the client."""

from __future__ import annotations

import multiprocessing as mp
import time

from pytest_ubench.load.engine import LoadPlan, run
from pytest_ubench.load.http import build_request
from pytest_ubench.load.routing import Target
from pytest_ubench.metrics.client_check import ClientHealth, check


def _health(cpu: float, host: float, steal: float, lag_ms: float) -> ClientHealth:
    return ClientHealth(cpu=[cpu] * 5, loop_lag_ms=[lag_ms] * 100, host_busy=[host] * 5, host_steal=[steal] * 5)


def test_late_timers_on_a_full_host_are_the_hosts_not_the_clients() -> None:
    crowded = check([_health(cpu=0.04, host=0.99, steal=0.0, lag_ms=35.9)], [], "closed", 0.0, 5.0)
    assert crowded["bottleneck"] is False and crowded["reasons"] == []
    assert "host oversubscribed: its CPUs were 99% busy while the client used 4% of a core" in crowded["host"]
    stolen = check([_health(cpu=0.1, host=0.5, steal=0.2, lag_ms=30.0)], [], "closed", 0.0, 5.0)
    assert "20% stolen by the hypervisor" in stolen["host"] and stolen["bottleneck"] is False
    busy_client = check([_health(cpu=0.95, host=0.99, steal=0.0, lag_ms=35.9)], [], "closed", 0.0, 5.0)
    assert busy_client["bottleneck"] is True and "host" not in busy_client
    assert any("95% busy" in r for r in busy_client["reasons"]) and any(
        "event-loop lag" in r for r in busy_client["reasons"]
    )


def _burn(until: float) -> None:
    while time.monotonic() < until:
        pass


def test_the_engine_samples_the_hosts_cpu_beside_its_own() -> None:
    """Every core kept busy by other processes while a light load runs: the host share reads near 1, the
    client's own share stays low (an independent measure: the burners are ours, their count known)."""
    until = time.monotonic() + 4.0
    burners = [mp.get_context("spawn").Process(target=_burn, args=(until,)) for _ in range(mp.cpu_count() + 1)]
    for b in burners:
        b.start()
    try:
        req = build_request("GET", "127.0.0.1", 9, "/", b"", {})
        plan = LoadPlan([req], False, "open", rate=5.0, duration_s=2.5, connect_timeout_s=0.2)
        result = run(Target("127.0.0.1", 9), plan)  # nothing listens on port 9: every request fails fast
    finally:
        for b in burners:
            b.join()
    (health,) = result.client
    assert health.host_busy and min(health.host_busy) > 0.85
    assert max(health.cpu) < 0.5
