"""The KServe v2 / Open Inference Protocol against a real v2 server: MLServer with a model of ours."""

from __future__ import annotations

import pytest
from helpers import record_rows, run_recipe

from pytest_ubench import load_recipe as load
from pytest_ubench.recipes.loader import RecipeError

pytestmark = pytest.mark.integration


def _recipe(name: str, kserve: dict, delay_ms: float = 0.0, **workload: object) -> dict:
    server = ["{python}", "-m", "pytest_ubench.servers.mlserver", "--data", "{run_dir}/ml", "--host", "{host}",
              "--port", "{port}", "--delay-ms", str(delay_ms)]  # fmt: skip
    wl: dict = {"protocol": "kserve-v2", "stream": False, "kserve": kserve,
                "load": {"mode": "closed", "concurrency": 2}, "duration_s": 1.5, "warmup_s": 0.3}  # fmt: skip
    wl.update(workload)
    return {"name": name, "service": {"command": server, "health": {"path": "/v2/health/ready", "timeout_s": 120}},
            "workload": wl, "slo": ["error_rate < 0.01"]}  # fmt: skip


def test_inferences_against_mlserver(write_recipe, tmp_path):
    pytest.importorskip("mlserver", reason="mlserver is a test dependency: pip install -e '.[test]'")
    kserve = {"model": "sum", "version": "1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [4, 16]}],
              "variants": 3}  # fmt: skip
    res = run_recipe(write_recipe, tmp_path, _recipe("v2", kserve, delay_ms=5.0))
    r = res.result
    assert r["requests"]["ok"] > 20 and r["requests"]["failed"] == 0
    # The model waits 5 ms on MLServer's uvloop, whose timers have millisecond granularity (measured: one
    # answer after 4.74 ms): nothing comes back in under 4 ms.
    assert r["metrics"]["e2e_ms"]["min"] >= 4.0
    assert r["throughput"]["items_per_s"] == pytest.approx(4 * r["throughput"]["requests_per_s"])
    assert r["dataset"] == {"kind": "tensors", "prompts": 0, "model": "sum", "bodies": 3, "batch": 4}
    assert all(x["bytes"] > 50 for x in record_rows(res.run_dir))
    assert "inferences/s" in res.key_figures()


def test_unknown_model_is_an_error_by_status(write_recipe, tmp_path):
    pytest.importorskip("mlserver", reason="mlserver is a test dependency: pip install -e '.[test]'")
    kserve = {"model": "absent", "inputs": [{"name": "x", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}]}
    res = run_recipe(write_recipe, tmp_path, _recipe("nomodel", kserve, duration_s=0.5))
    assert set(res.result["requests"]["errors"]) == {"http_404"} and not res.passed


def test_data_that_does_not_fill_its_shape_is_a_recipe_error(write_recipe):
    kserve = {"model": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2]}]}
    with pytest.raises(RecipeError, match=r"input x: 2 values do not fill shape \[2, 3\]"):
        load(write_recipe(_recipe("badshape", kserve)))
