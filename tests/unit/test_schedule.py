from __future__ import annotations

import numpy as np
import pytest

from pytest_ubench.load.schedule import Stage, arrivals, build, bursts, staged


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


def test_gamma_keeps_the_rate_and_sets_burstiness():
    rate, n = 40.0, 20_000
    for shape in (0.25, 1.0, 4.0):
        t = arrivals(rate, n / rate, "gamma", seed=5, shape=shape)
        gaps = np.diff(t)
        assert abs(len(t) / (n / rate) - rate) / rate < 0.05
        # gamma gaps: coefficient of variation 1/sqrt(shape)
        assert abs(gaps.std() / gaps.mean() - 1 / np.sqrt(shape)) < 0.06 / np.sqrt(shape)


def test_ramp_steps_each_at_its_rate():
    stages = [Stage(r, 50.0) for r in (2.0, 8.0, 32.0)]
    t = staged(stages, "poisson", seed=2)
    counts = [np.sum((t >= 50 * i) & (t < 50 * (i + 1))) for i in range(3)]
    for count, st in zip(counts, stages, strict=True):
        expected = st.rate * st.duration_s
        assert abs(count - expected) < 4 * np.sqrt(expected)
    assert t.max() < 150 and np.all(np.diff(t) >= 0)


def test_bursts_arrive_together():
    b = bursts(every_s=2.0, size=5, duration_s=7.0, first_s=1.0)
    assert b.tolist() == [1.0] * 5 + [3.0] * 5 + [5.0] * 5


def test_dealt_parts_add_up_to_the_whole_schedule():
    whole = build(np.concatenate([arrivals(100, 5, seed=1), bursts(1.0, 3, 5.0)]))
    parts = [whole.deal(i, 3) for i in range(3)]
    assert sum(len(p) for p in parts) == len(whole)
    merged = np.sort(np.concatenate([p.offsets for p in parts]))
    assert np.array_equal(merged, whole.offsets)
    # every arrival keeps the request the single-process run would have sent
    assert sorted(np.concatenate([p.requests for p in parts]).tolist()) == list(range(len(whole)))
    assert np.all(np.diff(parts[1].offsets) >= 0)


@pytest.mark.parametrize("block", [1, 7, 4096])
def test_pairs_walk_the_whole_schedule_in_order(block: int) -> None:
    """The engine reads the schedule a block at a time: every arrival once, with its own request, in order,
    whatever the block's edges."""
    sched = build(np.concatenate([arrivals(300.0, 2.0, seed=4), bursts(0.5, 3, 2.0)]))
    got = list(sched.pairs(block))
    assert len(got) == len(sched)
    assert got == [(float(o), int(r)) for o, r in zip(sched.offsets, sched.requests, strict=True)]
