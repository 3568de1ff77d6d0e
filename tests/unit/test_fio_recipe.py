"""fio recipes: no service, validated job options, and the job file they become."""

from __future__ import annotations

import pydantic
import pytest

from pytest_ubench.protocols.fio import Fio, job_text
from pytest_ubench.recipes.schema import Recipe

LOAD = {"mode": "closed", "concurrency": 2}


def _recipe(**fio: object) -> dict:
    return {"name": "f", "workload": {"protocol": "fio", "stream": False, "load": LOAD,
                                      "fio": {"jobs": [{"name": "r", "rw": "randread"}], **fio}}}  # fmt: skip


def test_fio_needs_no_service_but_every_other_protocol_does():
    assert Recipe.model_validate(_recipe()).service is None
    with pytest.raises(pydantic.ValidationError, match="a 'service' part is required"):
        Recipe.model_validate({"name": "x", "workload": {"load": LOAD}})


@pytest.mark.parametrize(
    ("fio", "message"),
    [
        ({"options": {"fsync": "1\n[evil]"}}, "a value must be one line"),
        ({"jobs": [{"name": "a", "rw": "read"}, {"name": "a", "rw": "write"}]}, "job names must be unique"),
        ({"jobs": [{"name": "a b", "rw": "read"}]}, "should match pattern"),
        ({"jobs": [{"name": "a", "rw": "read", "bs": "4 parsecs"}]}, "not a size"),
        ({"directory": "/a\n[x]"}, "should match pattern"),
    ],
)
def test_values_that_could_break_the_job_file_are_refused(fio, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        Recipe.model_validate(_recipe(**fio))


def test_job_file_one_stonewalled_section_per_job_numjobs_from_concurrency():
    spec = Fio.model_validate({"jobs": [{"name": "a", "rw": "write", "bs": "1MiB", "numjobs": 4},
                                        {"name": "b", "rw": "randrw", "rwmixread": 70, "direct": True}],
                               "options": {"fsync": 8}})  # fmt: skip
    text = job_text(spec, "/scratch/x", 1.5, 0.5, concurrency=3)
    assert "[global]\ndirectory=/scratch/x\n" in text and "runtime=1500ms" in text and "ramp_time=500ms" in text
    assert "fsync=8" in text.split("[a]")[0]
    a, b = text.split("[a]")[1].split("[b]")
    assert "stonewall\nrw=write\nbs=1048576" in a and "numjobs=4" in a
    assert "numjobs=3" in b and "rwmixread=70" in b and "direct=1" in b


def test_merge_adds_rates_and_bounds_percentiles_from_above():
    from pytest_ubench.protocols.fio import merge

    def op(iops: float, n: int, mean: float, p99: float) -> dict:
        lat = {"count": n, "mean": mean, "min": mean / 2, "p50": mean, "p90": p99, "p95": p99, "p99": p99,
               "p99_9": p99, "max": p99 * 2}  # fmt: skip
        return {"total": n, "ok": n, "error_rate": 0.0, "per_s": iops, "bytes_per_s": iops * 4096,
                "bytes": n * 4096, "seconds": 1.0, "latency_ms": lat}  # fmt: skip

    merged = merge([{"r_read": op(100, 100, 1.0, 3.0)}, {"r_read": op(300, 300, 2.0, 5.0)}, {}])["r_read"]
    assert merged["per_s"] == 400 and merged["total"] == 400 and merged["tasks"] == 2
    lat = merged["latency_ms"]
    assert lat["mean"] == pytest.approx((100 * 1.0 + 300 * 2.0) / 400) and lat["min"] == 0.5 and lat["max"] == 10.0
    assert lat["p99"] == 5.0 and lat["percentiles"].startswith("upper bound")
