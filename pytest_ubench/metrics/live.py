"""A run's figures while it runs: counts and latency histograms folded from the rows of finished requests a
few at a time, never a rescan of every record. For the progress line and the checkpoints of long runs.

Latencies go into HdrHistograms (the ``hdrhistogram`` package): two significant digits (values within 1 %
of each other share a bucket), mergeable across client processes (``encode``/``add``). Percentiles from
them are within that 1 %; the figures a finished run publishes are computed from every record, exactly.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from .names import PERCENTILES

LATENCIES = ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "send_lag_ms")
_HIGHEST_US = 3600 * 1_000_000  # an hour: no request latency is longer
_DIGITS = 2


def _histogram() -> HdrHistogram:
    return HdrHistogram(1, _HIGHEST_US, _DIGITS)


def _record(h: HdrHistogram, us: np.ndarray) -> None:
    """Values in µs, all at once: their counts added to the histogram's own counts array.

    ``record_value`` is pure Python (~4 µs a call): a block of 8,192 requests took ~4 ms of the load's
    event loop, which showed as bursts of late sends at 10,000 req/s. This computes the same counts index
    as ``HdrHistogram._counts_index_for`` (its three lines, vectorised; a unit test holds the two equal
    over the whole range) and updates what ``record_value`` updates: the counts, the total, min and max.
    """
    v = np.clip(np.rint(us), 1, _HIGHEST_US).astype(np.int64)
    if not len(v):
        return
    half_mag, unit = h.sub_bucket_half_count_magnitude, h.unit_magnitude
    pow2ceiling = np.frexp((v | h.sub_bucket_mask).astype(np.float64))[1].astype(np.int64)  # bit length, exact
    bucket = pow2ceiling - unit - (half_mag + 1)
    index = ((bucket + 1) << half_mag) + (v >> (bucket + unit)) - h.sub_bucket_half_count
    counts = np.ctypeslib.as_array(h.counts)  # a view: the histogram's own storage
    counts += np.bincount(index, minlength=h.counts_len)[: h.counts_len].astype(counts.dtype)
    h.total_count += len(v)
    h.min_value = min(h.min_value, int(v.min()))
    h.max_value = max(h.max_value, int(v.max()))


class Live:
    """Running figures of the measured requests (warm-up counted apart)."""

    def __init__(self) -> None:
        self.hist = {m: _histogram() for m in LATENCIES}
        self.total = 0  # measured requests finished (sent)
        self.ok = 0
        self.dropped = 0  # arrivals an open loop could not send (max_in_flight): not in total
        self.warmup = 0
        self.errors: Counter[str] = Counter()
        self.output_tokens = 0

    def fold(self, rows: np.ndarray, chunk_us: np.ndarray, errors: list[str | None]) -> None:
        """Rows of finished requests (``columns.ROW``) and their chunks (µs after each one's intended send);
        ``errors``: the strings of the rows' error codes. Column by column (never a copy of rows: picking
        rows of a structured array is slow), so a block of 8,192 costs the event loop well under 1 ms."""
        measured, error = ~rows["warmup"], rows["error"]
        ok_all = error == 0
        n_measured = int(np.count_nonzero(measured))
        self.warmup += len(rows) - n_measured
        if len(chunk_us):  # gaps between consecutive chunks of one request, for the measured successful ones
            owner = np.repeat(np.arange(len(rows)), rows["n_chunks"].astype(np.int64))
            same = owner[1:] == owner[:-1]
            gaps, gap_owner = np.diff(chunk_us.astype(np.int64))[same], owner[1:][same]
            _record(self.hist["itl_ms"], gaps[measured[gap_owner] & ok_all[gap_owner]])
        dropped = errors.index("dropped") if "dropped" in errors else -1
        sent = measured & (error != dropped)
        n_sent = int(np.count_nonzero(sent))
        self.dropped += n_measured - n_sent
        ok = sent & ok_all
        self.total += n_sent
        self.ok += int(np.count_nonzero(ok))
        for code, count in zip(*np.unique(error[sent & ~ok_all], return_counts=True), strict=True):
            self.errors[errors[int(code)] or ""] += int(count)
        intended = rows["intended"][ok]
        out = rows["output_tokens"][ok]
        self.output_tokens += int(np.clip(out, 0, None).sum())
        e2e = (rows["end"][ok] - intended) * 1e6
        ttft = (rows["first"][ok] - intended) * 1e6
        out_f = out.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(out_f > 1, (e2e - ttft) / (out_f - 1), np.nan)
        lag = (rows["start"][ok] - intended) * 1e6
        for name, values in (("e2e_ms", e2e), ("ttft_ms", ttft), ("tpot_ms", tpot), ("send_lag_ms", lag)):
            _record(self.hist[name], values[~np.isnan(values)])

    def add(self, other: Live) -> None:
        """Another client process's figures added to these (histograms merge exactly, bucket by bucket)."""
        for m in LATENCIES:
            self.hist[m].add(other.hist[m])
        self.total += other.total
        self.ok += other.ok
        self.dropped += other.dropped
        self.warmup += other.warmup
        self.errors.update(other.errors)
        self.output_tokens += other.output_tokens

    def __getstate__(self) -> dict[str, Any]:
        """Sent between processes: histograms as HdrHistogram's own compressed encoding."""
        state = dict(self.__dict__)
        state["hist"] = {m: h.encode() for m, h in self.hist.items()}
        state["errors"] = Counter(self.errors)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        hist = {}
        for m, encoded in state.pop("hist").items():
            h = _histogram()
            h.decode_and_add(encoded)
            hist[m] = h
        self.__dict__.update(state, hist=hist)

    def copy(self) -> Live:
        other = Live.__new__(Live)
        other.__setstate__(self.__getstate__())
        return other

    def quantile_ms(self, metric: str, q: float) -> float | None:
        h = self.hist[metric]
        return h.get_value_at_percentile(q) / 1000.0 if h.get_total_count() else None

    def figures(self, elapsed_s: float) -> dict[str, Any]:
        """The ``requests``, ``metrics`` and ``throughput`` parts of a result, so far; latencies within 1 %."""
        failed = self.total - self.ok
        metrics: dict[str, Any] = {}
        for m, h in self.hist.items():
            count = h.get_total_count()
            if not count:
                metrics[m] = {"count": 0, "mean": None, "min": None, **dict.fromkeys(PERCENTILES), "max": None}
                continue
            metrics[m] = {
                "count": count,
                "mean": h.get_mean_value() / 1000.0,
                "min": h.get_min_value() / 1000.0,
                **{name: h.get_value_at_percentile(q) / 1000.0 for name, q in PERCENTILES.items()},
                "max": h.get_max_value() / 1000.0,
            }
        per_s = (lambda x: x / elapsed_s) if elapsed_s > 0 else (lambda x: 0.0)
        return {
            "requests": {
                "total": self.total,
                "ok": self.ok,
                "failed": failed,
                "dropped": self.dropped,
                "error_rate": failed / self.total if self.total else 0.0,
                "errors": dict(self.errors),
                "output_tokens_from": {},
            },
            "metrics": metrics,
            "throughput": {
                "elapsed_s": elapsed_s,
                "requests_per_s": per_s(self.ok),
                "output_tokens_per_s": per_s(self.output_tokens),
                "goodput_requests_per_s": None,  # judged per request against the SLOs: at the end
                "output_tokens": self.output_tokens,
            },
        }
