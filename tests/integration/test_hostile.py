"""A hostile server (pytest_ubench.testing.hostile) against the instrument: every response shape the
protocols parse replaced by broken bytes, dead and reset connections, drips, huge frames, 5xx/429 storms,
side endpoints that hang or lie. Every run must end in bounded time with a verdict, a results.json
whose failed requests carry an error class, the documented exit code, and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import record_rows, start

from pytest_ubench.orchestrators.local import LocalOrchestrator

pytestmark = pytest.mark.integration

HOSTILE = ["{python}", "-m", "pytest_ubench.testing.hostile", "--port", "{port}"]
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"


def _workload(protocol: str, stream: bool, **extra: object) -> dict:
    wl: dict = {"protocol": protocol, "stream": stream, "model": "m", "load": {"mode": "closed", "concurrency": 2},
                "duration_s": 1.0, "warmup_s": 0, "max_requests": 20, "timeouts": {"request_s": 2, "side_s": 2},
                "dataset": {"prompt_tokens": 8, "output_tokens": 4, "prompts": 4,
                            "token_counts": "approximate"}}  # fmt: skip
    wl.update(extra)
    return wl


KSERVE = {"model": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}
# (protocol, stream, extra workload, server arguments): one broken reply each
SHAPES = {
    "chat-choices-not-objects": ("openai-chat", False, {}, ["--body", '{"choices": [1]}']),
    "chat-usage-not-a-count": ("openai-chat", False, {}, [
        "--body", '{"choices": [{"message": {"content": "x"}}], "usage": {"completion_tokens": "abc"}}']),
    "chat-not-json": ("openai-chat", False, {}, ["--body", "<html>502 bad gateway</html>"]),
    "chat-json-array": ("openai-chat", False, {}, ["--body", "[]"]),
    "chat-message-not-object": ("openai-chat", False, {}, ["--body", '{"choices": [{"message": 5}]}']),
    "completions-choices-string": ("openai-completions", False, {}, ["--body", '{"choices": "x"}']),
    "stream-choice-not-object": ("openai-chat", True, {}, [
        "--content-type", SSE, "--body", 'data: {"choices": [1]}\n\ndata: [DONE]\n\n']),
    "stream-delta-not-object": ("openai-chat", True, {}, [
        "--content-type", SSE, "--body", 'data: {"choices": [{"delta": 3}]}\n\ndata: [DONE]\n\n']),
    "stream-usage-garbage": ("openai-chat", True, {}, [
        "--content-type", SSE, "--body",
        'data: {"choices": [{"delta": {"content": "x"}, "finish_reason": "stop"}], "usage": [1]}\n\ndata: [DONE]\n\n']),
    "stream-json-array": ("openai-chat", True, {}, [
        "--content-type", SSE, "--body", "data: [1, 2]\n\ndata: [DONE]\n\n"]),
    "stream-no-end": ("openai-chat", True, {}, ["--content-type", SSE, "--chunked", "--body",
                      'data: {"choices": [{"delta": {"content": "x"}}]}\n\n']),
    "embeddings-data-string": ("openai-embeddings", False, {}, ["--body", '{"data": "x"}']),
    "embeddings-vector-string": ("openai-embeddings", False, {}, ["--body", '{"data": [{"embedding": "x"}]}']),
    "embeddings-usage-list": ("openai-embeddings", False, {},
                              ["--body", '{"data": [{"embedding": [0.1]}], "usage": [1]}']),
    "ollama-count-not-a-number": ("ollama-chat", False, {}, ["--body", '{"done": true, "eval_count": "x"}']),
    "ollama-json-array": ("ollama-generate", False, {}, ["--body", "[]"]),
    "ollama-stream-negative-count": ("ollama-chat", True, {}, ["--content-type", NDJSON, "--chunked", "--body",
                                     '{"message": {"content": "x"}}\n{"done": true, "eval_count": -1}\n']),
    "ollama-stream-lines-not-objects": ("ollama-generate", True, {}, ["--content-type", NDJSON, "--chunked",
                                        "--body", '"x"\n[1]\n']),
    "kserve-outputs-string": ("kserve-v2", False, {"kserve": KSERVE}, ["--body", '{"outputs": "x"}']),
    "kserve-not-json": ("kserve-v2", False, {"kserve": KSERVE}, ["--body", "nope"]),
    "http-5xx": ("http", False, {"http": {"path": "/x"}}, ["--status", "503", "--body", "busy"]),
}  # fmt: skip
FAULTS = {
    "close-after-headers": (["--fault", "close"], {"disconnected"}),
    "reset": (["--fault", "reset"], {"disconnected", "connection_closed"}),
    "drip": (["--fault", "drip"], {"timeout"}),
    "huge-frame": (["--fault", "huge-frame", "--huge-mb", "16"], {"frame_too_large"}),
    "5xx-429-storm": (["--fault", "storm"], {"http_503", "http_429"}),
}


@pytest.fixture
def serve(tmp_path: Path):
    started = []

    def make(*args: str) -> str:
        dep = start([*HOSTILE, *args], tmp_path / f"srv{len(started)}", "hostile", health={"kind": "tcp"})
        started.append(dep)
        return dep.endpoint.url

    yield make
    for dep in started:
        LocalOrchestrator().stop(dep)


def _run(
    tmp_path: Path, recipe: dict, target: str, timeout_s: float = 90.0
) -> tuple[subprocess.CompletedProcess[str], float]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cmd = [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(path), "--target", target,
           "--output", str(tmp_path / "out")]  # fmt: skip
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    return done, time.monotonic() - t0


def _failed_records(tmp_path: Path) -> tuple[dict, list[dict]]:
    (case_dir,) = [p.parent for p in (tmp_path / "out").glob("*/results.json")]
    records = record_rows(case_dir)
    return json.loads((case_dir / "results.json").read_text()), records


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_broken_reply_is_a_failed_request_with_its_class(shape: str, serve, tmp_path: Path) -> None:
    protocol, stream, extra, server = SHAPES[shape]
    url = serve(*server)
    recipe = {"name": "hostile", "service": {"url": url, "health": {"kind": "tcp"}},
              "workload": _workload(protocol, stream, **extra), "slo": ["error_rate < 0.5"]}  # fmt: skip
    done, _ = _run(tmp_path, recipe, url)
    assert done.returncode == 1, done.stderr  # the documented "an SLO failed", not a crash or a recipe error
    assert "Traceback" not in done.stderr + done.stdout
    result, records = _failed_records(tmp_path)
    assert records and all(r["error"] for r in records)
    assert set(result["requests"]["errors"]) <= {"malformed_response", "malformed_stream", "wrong_count", "http_503"}
    assert result["requests"]["failed"] == len(records) == result["requests"]["total"]


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_connection_faults_are_counted_and_bounded(fault: str, serve, tmp_path: Path) -> None:
    args, kinds = FAULTS[fault]
    url = serve(*args)
    recipe = {"name": "hostile", "service": {"url": url, "health": {"kind": "tcp"}},
              "workload": _workload("openai-chat", True, max_requests=8), "slo": ["error_rate < 0.5"]}  # fmt: skip
    done, took = _run(tmp_path, recipe, url)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout and took < 60
    _, records = _failed_records(tmp_path)
    assert records and {r["error"] for r in records} <= kinds, {r["error"] for r in records}


@pytest.mark.parametrize(("tokenize", "said"), [("drip", "no whole answer within 2 s"), ("nonjson", "not JSON"),
                                                ("hang", "no answer within 2 s")])  # fmt: skip
def test_a_tokenizer_that_hangs_or_lies_falls_back_with_a_warning(tokenize, said, serve, tmp_path: Path) -> None:
    url = serve("--tokenize", tokenize)
    wl = _workload("openai-chat", False, dataset={"prompt_tokens": 8, "output_tokens": 4, "prompts": 2})
    recipe = {"name": "hostile", "service": {"url": url, "health": {"kind": "tcp"}}, "workload": wl,
              "slo": ["error_rate < 0.5"]}  # fmt: skip
    done, took = _run(tmp_path, recipe, url)
    assert done.returncode == 0, done.stderr
    assert f"{url}/tokenize" in done.stderr and said in done.stderr and took < 30
    result, _ = _failed_records(tmp_path)
    assert result["dataset"]["token_counts"] == "approximate (one character per token)"
    # where exact counts were required, the same server is an error naming the endpoint (exit 3)
    wl["dataset"]["token_counts"] = "server"
    done, took = _run(tmp_path / "strict", recipe, url)
    assert done.returncode == 3 and f"{url}/tokenize" in done.stderr and "Traceback" not in done.stderr


def test_a_dripping_health_path_times_out_on_time(tmp_path: Path) -> None:
    recipe = {"name": "hostile", "service": {"command": [*HOSTILE, "--health", "drip"], "health": {"timeout_s": 2}},
              "workload": _workload("openai-chat", False)}  # fmt: skip
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(path), "--output",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    took = time.monotonic() - t0
    assert done.returncode == 3, done.stderr
    assert "not healthy" in done.stderr and "/health: no whole answer within" in done.stderr
    assert took < 15, took  # 2 s of health deadline, plus start-up and one read's wait at most


def test_a_server_closing_kept_alive_connections_costs_no_request(serve, tmp_path: Path) -> None:
    """It announces keep-alive, then closes each connection after its answer (as llama.cpp does after a
    stream): a reused connection found dead before any byte of its answer is a resend, not a failure."""
    event = 'data: {"choices": [{"delta": {"content": "x"}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'
    url = serve("--fault", "keepalive-close", "--content-type", SSE, "--body", event)
    recipe = {"name": "hostile", "service": {"url": url, "health": {"kind": "tcp"}},
              "workload": _workload("openai-chat", True, max_requests=200), "slo": ["error_rate < 0.01"]}  # fmt: skip
    done, _ = _run(tmp_path, recipe, url)
    assert done.returncode == 0, done.stderr
    result, records = _failed_records(tmp_path)
    assert len(records) == 200 and result["requests"]["failed"] == 0


def test_a_resend_never_takes_another_connection_the_server_has_closed(serve, tmp_path: Path) -> None:
    """A burst leaves idle kept-alive connections that this server closes when they are used again (each
    serves one request, as llama.cpp's after a stream). The first reuse fails before any byte and is resent:
    on a new connection, not on the next idle one, which would fail the same way (4 requests of 48 were lost
    so before the fix, every run). Oracle: the schedule's own count, 20/s x 1.2 s plus 3 bursts of 8."""
    event = 'data: {"choices": [{"delta": {"content": "x"}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'
    url = serve("--fault", "one-per-connection", "--content-type", SSE, "--body", event)
    load = {"mode": "open", "rate": 20, "arrival": "constant", "bursts": {"every_s": 0.5, "size": 8}}
    recipe = {"name": "hostile", "service": {"url": url, "health": {"kind": "tcp"}},
              "workload": _workload("openai-chat", True, load=load, duration_s=1.2, max_requests=None),
              "slo": ["error_rate < 0.01"]}  # fmt: skip
    done, _ = _run(tmp_path, recipe, url)
    result, records = _failed_records(tmp_path)
    assert done.returncode == 0, (done.stderr, result["requests"])
    assert len(records) == 48 and result["requests"]["failed"] == 0, result["requests"]
