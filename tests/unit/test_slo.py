from __future__ import annotations

import pytest

from pytest_ubench.metrics import slo


def summary(ttft_p95: float | None = 120.0) -> dict:
    return {
        "metrics": {"ttft_ms": {"p95": ttft_p95, "count": 10}},
        "requests": {"error_rate": 0.02, "total": 50},
        "throughput": {"output_tokens_per_s": 150.0},
    }


@pytest.mark.parametrize(
    ("expr", "path", "op", "threshold"),
    [
        ("ttft_ms.p95 < 500", "ttft_ms.p95", "<", 500.0),
        ("itl_ms.p99<=50", "itl_ms.p99", "<=", 50.0),
        ("error_rate < 0.01", "error_rate", "<", 0.01),
        ("throughput.output_tokens_per_s > 1e2", "throughput.output_tokens_per_s", ">", 100.0),
        ("  e2e_ms.p99_9 >= .5 ", "e2e_ms.p99_9", ">=", 0.5),
    ],
)
def test_parse(expr, path, op, threshold):
    s = slo.parse(expr)
    assert (s.path, s.op, s.threshold) == (path, op, threshold)


@pytest.mark.parametrize("expr", ["ttft_ms.p97 < 3", "latency < 3", "ttft_ms.p95 << 3", "ttft_ms.p95 < fast", ""])
def test_bad_expressions_are_errors(expr):
    with pytest.raises(slo.SLOSyntaxError):
        slo.parse(expr)


def test_judge_reports_measured_and_allowed():
    verdicts = slo.judge(
        [
            slo.parse("ttft_ms.p95 < 100"),
            slo.parse("error_rate < 0.05"),
            slo.parse("throughput.output_tokens_per_s > 100"),
        ],
        summary(),
    )
    assert [v.passed for v in verdicts] == [False, True, True]
    assert verdicts[0].describe() == "FAIL ttft_ms.p95 < 100: measured 120, allowed < 100"
    assert verdicts[1].measured == pytest.approx(0.02)


def test_missing_figure_fails_rather_than_passes():
    (v,) = slo.judge([slo.parse("ttft_ms.p95 < 100")], summary(ttft_p95=None))
    assert not v.passed
    assert "n/a" in v.describe()


def test_per_request_bound_only_for_latency_ceilings():
    assert slo.parse("ttft_ms.p95 < 500").per_request_bound == ("ttft_ms", 500.0)
    assert slo.parse("ttft_ms.p95 > 500").per_request_bound is None
    assert slo.parse("error_rate < 0.1").per_request_bound is None


def test_an_slo_on_an_under_sampled_percentile_says_so_and_fails_when_strict() -> None:
    from pytest_ubench.metrics.stats import summarize

    few = summarize([10.0] * 100)
    assert few["under_sampled"] == ["p95", "p99", "p99_9"]
    assert summarize([10.0] * 700)["under_sampled"] == ["p99_9"]
    summary = {"metrics": {"ttft_ms": few}, "requests": {"error_rate": 0.0}}
    slos = [slo.parse("ttft_ms.p99 < 50"), slo.parse("ttft_ms.p50 < 50")]
    relaxed = slo.judge(slos, summary)
    assert relaxed[0].passed and "under-sampled: 100 samples, p99 needs >= 662" in relaxed[0].describe()
    assert relaxed[1].passed and relaxed[1].note == ""
    strict = slo.judge(slos, summary, strict_samples=True)
    assert not strict[0].passed and strict[1].passed
