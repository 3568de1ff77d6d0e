"""The regression decision: relative change AND significance, direction-aware."""

from __future__ import annotations

import numpy as np

from pytest_ubench.metrics.compare import compare, table


def runs(scale: float = 1.0, n: int = 400, seed: int = 0, rate: float = 100.0, seconds: int = 20) -> dict:
    rng = np.random.default_rng(seed)
    lat = rng.lognormal(mean=np.log(50), sigma=0.3, size=n) * scale
    return {
        "ttft_ms": lat,
        "itl_ms": lat / 10,
        "tpot_ms": lat / 10,
        "e2e_ms": lat * 3,
        "requests_per_s": rng.poisson(rate, size=seconds).astype(float),
        "output_tokens_per_s": rng.poisson(rate * 64, size=seconds).astype(float),
    }


def verdicts(result) -> dict[str, str]:
    return {c.metric: c.verdict for c in result}


def test_two_samples_of_the_same_distribution_are_not_a_regression() -> None:
    for seed in range(20):
        assert set(verdicts(compare(runs(seed=seed), runs(seed=seed + 100))).values()) == {"unchanged"}


def test_a_30_percent_slowdown_is_a_regression_with_a_small_p_value() -> None:
    result = compare(runs(), runs(scale=1.3, seed=1, rate=77))
    v = verdicts(result)
    assert all(v[m] == "regression" for m in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "requests_per_s"))
    ttft = next(c for c in result if c.metric == "ttft_ms")
    assert 0.2 < ttft.change < 0.4 and ttft.p_value < 1e-6
    assert f"{ttft.change:+.1%}" in table(result) and "regression" in table(result)


def test_a_speedup_is_an_improvement_never_a_regression() -> None:
    v = verdicts(compare(runs(), runs(scale=0.7, seed=1, rate=130)))
    assert v["ttft_ms"] == "improvement" and v["requests_per_s"] == "improvement"
    assert "regression" not in v.values()


def test_a_large_change_on_few_samples_is_not_evidence() -> None:
    base, cur = runs(n=5), runs(scale=1.3, n=5, seed=1)
    assert verdicts(compare(base, cur))["ttft_ms"] == "insufficient"
    base, cur = runs(n=12), runs(scale=1.12, n=12, seed=1)  # above 10 % but not significant at n=12
    assert verdicts(compare(base, cur))["ttft_ms"] == "unchanged"


def test_a_significant_but_small_change_does_not_gate() -> None:
    v = verdicts(compare(runs(n=100_000), runs(scale=1.03, n=100_000, seed=1)))
    assert v["ttft_ms"] == "unchanged"
    # unless that metric's threshold says 2 % matters
    assert verdicts(compare(runs(n=100_000), runs(scale=1.03, n=100_000, seed=1), {"ttft_ms": 0.02}))["ttft_ms"] == (
        "regression"
    )


def test_recall_is_compared_per_query_and_absent_figures_are_left_out() -> None:
    from pytest_ubench.metrics.compare import DEFAULT_MIN_CHANGE

    rng = np.random.default_rng(1)
    base = {"recall": np.clip(rng.normal(0.97, 0.03, 500), 0, 1)}
    worse = {"recall": np.clip(rng.normal(0.93, 0.05, 500), 0, 1)}  # a 4 % drop: small, and a regression
    (only,) = compare(base, worse, DEFAULT_MIN_CHANGE)
    assert only.metric == "recall" and only.verdict == "regression"
    assert compare({"recall": np.empty(0)}, {"recall": np.empty(0)}) == []  # a figure neither run has
