"""Open-loop arrival schedules: intended send offsets fixed before the run starts.

Drawing the whole schedule up front (seeded) means the send times never depend on how the server
or the client behaves: the basis for measuring latency from the intended time.
"""

from __future__ import annotations

import numpy as np


def arrivals(rate: float, duration_s: float, kind: str = "poisson", seed: int = 0) -> np.ndarray:
    """Offsets in seconds from the run start, all below ``duration_s``."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    expected = rate * duration_s
    if kind == "constant":
        return np.arange(int(np.ceil(expected)), dtype=np.float64) / rate
    if kind != "poisson":
        raise ValueError(f"unknown arrival process {kind!r}")
    rng = np.random.default_rng(seed)
    n = int(expected + 6 * np.sqrt(expected) + 16)
    times = np.cumsum(rng.exponential(1.0 / rate, size=n))
    while times[-1] < duration_s:  # astronomically rare; keep drawing rather than truncate the run
        more = times[-1] + np.cumsum(rng.exponential(1.0 / rate, size=n))
        times = np.concatenate([times, more])
    # The first arrival is at 0 so the run starts loading at once.
    times = np.concatenate([[0.0], times[:-1]])
    return times[times < duration_s]
