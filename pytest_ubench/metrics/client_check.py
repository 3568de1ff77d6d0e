"""Did the load client keep up? A run judged on a client that was the bottleneck measures the client.

Evidence, per run: each client process's CPU share (judged in closed loop; in open loop it includes
the pacer's polling for precise send times, so there the send lag speaks instead), event-loop lag (how
late a 100 ms timer fired), open-loop send lag (actual minus intended send time) and the send rate
achieved inside the load window against the schedule's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter, process_time
from typing import Any

import numpy as np
import psutil

from .columns import Records

CPU_LIMIT = 0.80
HOST_BUSY = 0.90  # a host this busy (or stolen from, STEAL) makes a timer fire late whoever is to blame
HOST_STEAL = 0.05
OWN_CPU_IDLE = 0.50  # a client using less than this of a core is not what kept its event loop waiting
LOOP_LAG_P99_MS = 10.0
SEND_LAG_P99_MS = 10.0
ACHIEVED_MIN = 0.95


@dataclass
class ClientHealth:
    """Whether this client process kept up: CPU share per second and event-loop lag per 100 ms tick.

    In open loop the CPU share includes the pacer polling for precise send times (``polling`` is that
    share of wall time; responses are handled while it polls, so the two cannot be told apart): there,
    send lag is the evidence, and CPU is shown for information.
    """

    cpu: list[float] = field(default_factory=list)
    polling: list[float] = field(default_factory=list)
    loop_lag_ms: list[float] = field(default_factory=list)
    # The host around it, per second: the share of all cores busy, and of it stolen by a hypervisor.
    host_busy: list[float] = field(default_factory=list)
    host_steal: list[float] = field(default_factory=list)


async def sample_health(health: ClientHealth, spin: Callable[[], float]) -> None:
    """Fill ``health`` while the load runs (a task beside it): event-loop lag each 100 ms tick; each second
    the process's CPU share, the share spent polling for send times (``spin``: seconds so far), and the
    host's busy and stolen shares."""
    tick = 0.1
    last_t, last_cpu, last_spin = perf_counter(), process_time(), 0.0
    last_host = psutil.cpu_times()
    while True:
        before = perf_counter()
        await asyncio.sleep(tick)
        now = perf_counter()
        health.loop_lag_ms.append((now - before - tick) * 1000.0)
        if now - last_t >= 1.0:
            cpu, polled = process_time(), spin()
            health.cpu.append((cpu - last_cpu) / (now - last_t))
            health.polling.append((polled - last_spin) / (now - last_t))
            host = psutil.cpu_times()
            total = sum(host) - sum(last_host)
            if total > 0:
                idle = (host.idle - last_host.idle) + (getattr(host, "iowait", 0.0) - getattr(last_host, "iowait", 0.0))
                health.host_busy.append(1.0 - idle / total)
                health.host_steal.append((getattr(host, "steal", 0.0) - getattr(last_host, "steal", 0.0)) / total)
            last_t, last_cpu, last_spin, last_host = now, cpu, polled, host


def check(
    health: Sequence[ClientHealth], records: Records, mode: str, window_start: float, window_end: float
) -> dict[str, Any]:
    reasons = []
    cpu = [float(np.mean(h.cpu)) for h in health if h.cpu]
    lags = [x for h in health for x in h.loop_lag_ms]
    host = max((float(np.mean(h.host_busy)) for h in health if h.host_busy), default=None)
    steal = max((float(np.mean(h.host_steal)) for h in health if h.host_steal), default=None)
    out: dict[str, Any] = {
        "processes": len(health),
        "cpu_busy_max": max(cpu) if cpu else None,
        "host_cpu_busy": host,
        "host_steal": steal,
        "polling_max": max((float(np.mean(h.polling)) for h in health if h.polling), default=None),
        "loop_lag_p99_ms": float(np.percentile(lags, 99)) if lags else None,
        "send_lag_p99_ms": None,
        "send_rate": None,
        "scheduled_rate": None,
    }
    if not health:
        out |= {"bottleneck": None, "reasons": ["client health was not sampled (Slurm client tasks)"]}
        return out
    if mode == "closed" and cpu and max(cpu) > CPU_LIMIT:
        reasons.append(f"a client process was {max(cpu):.0%} busy (limit {CPU_LIMIT:.0%})")
    # Late timers with a client that barely used a core, on a host that was full (or whose hypervisor
    # took the cores away): the host was oversubscribed, and that is what the run says, not "the client".
    crowded = (host is not None and host > HOST_BUSY) or (steal is not None and steal > HOST_STEAL)
    if crowded and (not cpu or max(cpu) < OWN_CPU_IDLE):
        stolen = f", {steal:.0%} stolen by the hypervisor" if steal else ""
        used = f"{max(cpu, default=0):.0%} of a core"
        out["host"] = (f"host oversubscribed: its CPUs were {host or 0:.0%} busy{stolen} while the client used "
                       f"{used}; late timers and sends are the host's, not the client's")  # fmt: skip
    elif lags and out["loop_lag_p99_ms"] > LOOP_LAG_P99_MS:
        reasons.append(f"event-loop lag p99 {out['loop_lag_p99_ms']:.1f} ms (limit {LOOP_LAG_P99_MS:g} ms)")
    if mode == "open":
        measured = records.measured
        sent = measured.take(~np.isnan(measured["start"]))
        if len(sent):
            lag = float(np.percentile((sent["start"] - sent["intended"]) * 1000.0, 99))
            out["send_lag_p99_ms"] = lag
            if lag > SEND_LAG_P99_MS and "host" not in out:
                reasons.append(f"send lag p99 {lag:.1f} ms (limit {SEND_LAG_P99_MS:g} ms)")
        span = window_end - window_start
        intended, started = measured.at("intended"), sent.at("start")
        scheduled = int(np.count_nonzero((window_start <= intended) & (intended < window_end)))
        on_time = int(np.count_nonzero((window_start <= started) & (started < window_end)))
        dropped = measured.code("error", "dropped")
        if span > 0 and scheduled:
            out["scheduled_rate"], out["send_rate"] = scheduled / span, on_time / span
            if on_time < ACHIEVED_MIN * scheduled and not (dropped > 0 and (measured["error"] == dropped).any()):
                reasons.append(
                    f"sent {on_time / span:.1f} req/s within the window against {scheduled / span:.1f} scheduled"
                )
    out |= {"bottleneck": bool(reasons), "reasons": reasons}
    return out
