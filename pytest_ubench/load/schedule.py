"""Open-loop arrival schedules: intended send offsets fixed before the run starts.

Drawing the whole schedule up front (seeded) means the send times never depend on how the server
or the client behaves: the basis for measuring latency from the intended time. It also lets several
client processes share one schedule exactly: each takes every n-th arrival (``deal``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Stage:
    """A stretch of the run at one arrival rate (a step of a ramp)."""

    rate: float
    duration_s: float


@dataclass(frozen=True)
class Schedule:
    """Send offsets (s from the run start, sorted) and, per arrival, which request to send."""

    offsets: np.ndarray
    requests: np.ndarray  # index into the plan's requests (taken modulo their count)

    def __len__(self) -> int:
        return len(self.offsets)

    def pairs(self, block: int = 4096) -> Iterator[tuple[float, int]]:
        """(offset, request) in order, as Python numbers a block at a time: a whole hour's arrivals as
        Python objects would be ~70 bytes each (250 MB for 30 minutes at 2,000/s), held for the run."""
        return itertools.chain.from_iterable(
            zip(self.offsets[lo : lo + block].tolist(), self.requests[lo : lo + block].tolist(), strict=True)
            for lo in range(0, len(self), block)
        )

    def head(self, n: int) -> Schedule:
        return Schedule(self.offsets[:n], self.requests[:n])

    def deal(self, index: int, count: int) -> Schedule:
        """Arrivals index, index + count, ...: the parts of ``count`` processes add up to the whole."""
        return Schedule(self.offsets[index::count], self.requests[index::count])


def arrivals(rate: float, duration_s: float, kind: str = "poisson", seed: int = 0, shape: float = 1.0) -> np.ndarray:
    """Offsets in seconds from the run start, all below ``duration_s``.

    ``gamma`` gaps have mean ``1/rate`` and coefficient of variation ``1/sqrt(shape)``: shape 1 is
    Poisson, below 1 burstier, above 1 more regular (vLLM's ``--burstiness``).
    """
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    if shape <= 0:
        raise ValueError(f"gamma shape must be > 0, got {shape}")
    expected = rate * duration_s
    if kind == "constant":
        return np.arange(int(np.ceil(expected)), dtype=np.float64) / rate
    if kind not in ("poisson", "gamma"):
        raise ValueError(f"unknown arrival process {kind!r}")
    k = 1.0 if kind == "poisson" else shape
    rng = np.random.default_rng(seed)

    def gaps(n: int) -> np.ndarray:
        return rng.gamma(k, 1.0 / (rate * k), size=n)

    n = int(expected + 6 * np.sqrt(expected / k) + 16)
    times = np.cumsum(gaps(n))
    while times[-1] < duration_s:  # rare; keep drawing rather than truncate the run
        times = np.concatenate([times, times[-1] + np.cumsum(gaps(n))])
    # The first arrival is at 0 so the run starts loading at once.
    times = np.concatenate([[0.0], times[:-1]])
    return times[times < duration_s]


def staged(stages: Sequence[Stage], kind: str = "poisson", seed: int = 0, shape: float = 1.0) -> np.ndarray:
    """Arrivals through consecutive stages, each drawn at its own rate with its own seed."""
    parts, start = [], 0.0
    for i, st in enumerate(stages):
        parts.append(start + arrivals(st.rate, st.duration_s, kind, seed + 7919 * i, shape))
        start += st.duration_s
    return np.concatenate(parts) if parts else np.zeros(0)


def bursts(every_s: float, size: int, duration_s: float, first_s: float = 0.0) -> np.ndarray:
    """``size`` simultaneous arrivals every ``every_s`` seconds from ``first_s``."""
    starts = np.arange(first_s, duration_s, every_s)
    return np.repeat(starts, size)


def build(offsets: np.ndarray, requests: np.ndarray | None = None) -> Schedule:
    """A schedule from unsorted offsets; requests default to round-robin in arrival order."""
    order = np.argsort(offsets, kind="stable")
    offsets = np.asarray(offsets, dtype=np.float64)[order]
    req = np.arange(len(offsets)) if requests is None else np.asarray(requests)[order]
    return Schedule(offsets, req)
