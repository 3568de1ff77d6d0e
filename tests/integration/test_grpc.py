"""gRPC against a real grpcio server (pytest_ubench.testing.grpcserver: replies after known delays)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import record_rows, run_killing_the_service, run_recipe, start

from pytest_ubench.orchestrators.base import ServiceError

pytestmark = pytest.mark.integration
SERVER = ["{python}", "-m", "pytest_ubench.testing.grpcserver", "--host", "{host}", "--port", "{port}"]
PROTO = Path(__file__).parents[2] / "pytest_ubench" / "testing" / "echo.proto"


def _recipe(name: str, grpc: dict, *server_args: str, **workload: object) -> dict:
    wl: dict = {"protocol": "grpc", "grpc": {"service": "ubench.test.Echo", **grpc},
                "load": {"mode": "closed", "concurrency": 2}, "duration_s": 1.5, "warmup_s": 0.3}  # fmt: skip
    wl.update(workload)
    return {"name": name, "service": {"command": [*SERVER, *server_args], "health": {"kind": "tcp"}}, "workload": wl,
            "slo": ["error_rate < 0.01"]}  # fmt: skip


def _records(res) -> list[dict]:
    return record_rows(res.run_dir)


def test_server_streaming_through_reflection_times_every_message(write_recipe, tmp_path):
    request = {"text": "hi", "delay_ms": 20, "count": 6, "interval_ms": 8, "size": 100}
    res = run_recipe(write_recipe, tmp_path, _recipe("stream", {"method": "Stream", "request": request}))
    r = res.result
    assert r["requests"]["ok"] > 20 and r["requests"]["failed"] == 0
    assert all(len(x["chunk_us"]) == 6 and x["items"] == 6 for x in _records(res) if x["error"] is None)
    ttft, itl = r["metrics"]["ttft_ms"], r["metrics"]["itl_ms"]
    assert ttft["min"] >= 20.0 and ttft["p50"] < 40.0  # the server waits 20 ms before the first reply
    assert 7.5 <= itl["p50"] < 20.0  # and 8 ms between replies
    assert r["throughput"]["items_per_s"] == pytest.approx(6 * r["throughput"]["requests_per_s"])
    assert r["dataset"]["descriptors"] == "server reflection"
    assert "ttft p50" in res.key_figures() and "messages/s" in res.key_figures()


def test_unary_from_a_proto_file_with_metadata_from_the_environment(write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("UB_GRPC_TOKEN", "grpc-s3cr3t-value")
    grpc = {"method": "Say", "request": {"text": "hi", "delay_ms": 10, "size": 1000}, "proto": str(PROTO),
            "metadata": {"authorization": "Bearer ${UB_GRPC_TOKEN}"}}  # fmt: skip
    res = run_recipe(write_recipe, tmp_path, _recipe("unary", grpc, "--no-reflection"))
    r = res.result
    assert r["requests"]["ok"] > 10 and r["metrics"]["ttft_ms"]["count"] == 0
    assert r["metrics"]["e2e_ms"]["min"] >= 10.0 and r["metrics"]["e2e_ms"]["p50"] < 40.0
    assert all(x["bytes"] > 1000 for x in _records(res) if x["error"] is None)  # the payload came back
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert b"grpc-s3cr3t-value" not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("grpc", "server_args", "message"),
    [
        ({"method": "Shout"}, (), r"ubench\.test\.Echo has no method Shout; it has: Say, Stream"),
        ({"method": "Say", "request": {"volume": 3}}, (), r"workload\.grpc\.request: not a ubench\.test\.SayRequest"),
        ({"method": "Say"}, ("--no-reflection",), r"server reflection failed \(UNIMPLEMENTED\): give workload\.grpc"),
        ({"method": "Say", "metadata": {"k": "${UB_NOT_SET}"}}, (), r"workload\.grpc\.metadata\.k: .*UB_NOT_SET"),
    ],
)
def test_bad_calls_are_named_before_the_load(write_recipe, tmp_path, monkeypatch, grpc, server_args, message):
    monkeypatch.delenv("UB_NOT_SET", raising=False)
    with pytest.raises(ServiceError, match=message):
        run_recipe(write_recipe, tmp_path, _recipe("bad", grpc, *server_args))


def test_a_proto_that_does_not_compile_shows_protocs_message(write_recipe, tmp_path):
    broken = tmp_path / "broken.proto"
    broken.write_text('syntax = "proto3";\nmessage A { strin x = 1; }\n')
    with pytest.raises(ServiceError, match=r"protoc rejected .*broken\.proto: .*strin"):
        run_recipe(write_recipe, tmp_path, _recipe("broken", {"method": "Say", "proto": str(broken)}))


def test_server_killed_mid_run_is_recorded_as_connect_errors(write_recipe, tmp_path):
    dep = start(SERVER, tmp_path / "svc", "grpc", health={"kind": "tcp"})
    recipe = _recipe("dies", {"method": "Say", "request": {"delay_ms": 2}}, duration_s=4.0, warmup_s=0)
    res = run_killing_the_service(write_recipe, tmp_path, recipe, dep, after_s=1.5)
    r = res.result
    assert r["requests"]["ok"] > 0 and "connect" in r["requests"]["errors"], r["requests"]["errors"]
    assert not res.passed
