"""Steady-state detection (MSER-5) on series with a known change point."""

from __future__ import annotations

import numpy as np

from pytest_ubench.metrics.columns import Records
from pytest_ubench.metrics.records import Record
from pytest_ubench.metrics.steady import mser, window


def test_finds_a_known_warmup_end():
    rng = np.random.default_rng(0)
    warm = np.linspace(200, 100, 30) + rng.normal(0, 3, 30)  # 30 s of falling latency
    steady = 100 + rng.normal(0, 3, 150)
    cut, stable = mser(np.concatenate([warm, steady]))
    assert stable
    assert 25 <= cut <= 60  # not before the change; MSER may trim a little flat data too


def test_a_stationary_series_is_kept_whole():
    rng = np.random.default_rng(1)
    cut, stable = mser(50 + rng.normal(0, 2, 120))
    assert stable is True and cut <= 10


def test_a_series_that_never_settles_is_flagged():
    cut, stable = mser(np.linspace(10, 500, 120))  # a queue that keeps growing
    assert stable is False
    assert cut > 60


def test_too_short_to_tell_is_not_called_unstable():
    assert mser(np.full(8, 5.0)) == (0, None)
    win = window(Records.of(_records([0.1] * 8)), 0.0, 8.0)
    assert win["stable"] is None and "too short" in win["note"]


def test_short_series_uses_single_observations():
    series = np.concatenate([np.full(8, 300.0), np.full(22, 100.0)]) + np.random.default_rng(2).normal(0, 1, 30)
    cut, stable = mser(series)
    assert stable and 6 <= cut <= 10


def _records(latency_s: list[float], per_second: int = 10) -> list[Record]:
    recs = []
    for sec, lat in enumerate(latency_s):
        for k in range(per_second):
            r = Record(sec + k / per_second)
            r.start = r.intended
            r.end = r.intended + lat
            r.status = 200
            recs.append(r)
    return recs


def test_window_over_records_reports_where_the_run_settled():
    lat = [0.5 - 0.4 * i / 20 for i in range(20)] + [0.1] * 80  # settles after 20 s
    win = window(Records.of(_records(lat)), 0.0, 100.0)
    assert win["stable"]
    assert 15 <= win["start_s"] <= 25
    assert win["end_s"] == 100
