from __future__ import annotations

import numpy as np
import pytest

from pytest_ubench.load.schedule import arrivals


def test_poisson_rate_within_two_percent_over_10k_draws():
    rate = 50.0
    t = arrivals(rate, duration_s=10_000 / rate, kind="poisson", seed=7)
    assert abs(len(t) / (10_000 / rate) - rate) / rate < 0.02
    gaps = np.diff(t)
    assert abs(gaps.mean() - 1 / rate) * rate < 0.02
    # exponential gaps: coefficient of variation ~1
    assert 0.95 < gaps.std() / gaps.mean() < 1.05


def test_seeded_and_reproducible():
    a = arrivals(10, 30, "poisson", seed=3)
    assert np.array_equal(a, arrivals(10, 30, "poisson", seed=3))
    assert not np.array_equal(a, arrivals(10, 30, "poisson", seed=4))


def test_constant_spacing_and_bounds():
    t = arrivals(4, 2.5, "constant")
    assert t.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25]
    p = arrivals(100, 3, "poisson", seed=1)
    assert p[0] == 0.0 and p.max() < 3 and np.all(np.diff(p) >= 0)


def test_bad_rate():
    with pytest.raises(ValueError):
        arrivals(0, 1)
