"""Ollama's NDJSON: tokens stamped as they arrive, counts and durations from the ``done`` line."""

from __future__ import annotations

import json
import math

import pytest

from pytest_ubench.load.dataset import Prompt
from pytest_ubench.metrics.columns import Records
from pytest_ubench.metrics.records import Record
from pytest_ubench.metrics.stats import server_reported
from pytest_ubench.protocols.ollama import NdjsonSink, OllamaJsonSink, request_body

DONE = {"done": True, "eval_count": 3, "eval_duration": 30_000_000, "prompt_eval_count": 9}


def ndjson(*objs: dict) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def feed(stream: bytes, step: int | None = None, status: int = 200) -> Record:
    rec = Record(0.0)
    sink = NdjsonSink(rec)
    sink.on_status(status, 0.0)
    pieces = [stream] if step is None else [stream[i : i + step] for i in range(0, len(stream), step)]
    for i, p in enumerate(pieces):
        sink.on_body(p, float(i + 1))
    sink.finish()
    return rec


CHAT = ndjson(*({"message": {"role": "assistant", "content": t}, "done": False} for t in "abc"),
              {"message": {"role": "assistant", "content": ""}, **DONE})  # fmt: skip


@pytest.mark.parametrize("step", [None, 1, 7])
def test_chat_tokens_and_the_done_lines_counts_whatever_the_chunking(step):
    rec = feed(CHAT, step)
    assert rec.error is None and len(rec.chunks) == 3 and rec.first == rec.chunks[0]
    assert (rec.output_tokens, rec.tokens_from, rec.prompt_tokens) == (3, "usage", 9)
    assert rec.server_decode_s == pytest.approx(0.03)


def test_generate_responses_and_a_last_line_without_newline():
    body = ndjson({"response": "a", "done": False}) + json.dumps({"response": "", **DONE}).encode()
    rec = feed(body)
    assert rec.error is None and len(rec.chunks) == 1 and rec.output_tokens == 3


@pytest.mark.parametrize(
    ("stream", "status", "error"),
    [
        (ndjson({"response": "a", "done": False}), 200, "malformed_stream"),  # cut before done
        (ndjson({"error": "model 'x' not found"}), 200, "stream_error"),
        (b"not json\n", 200, "malformed_stream"),
        (b'{"error":"model not found"}', 404, "http_404"),
    ],
)
def test_broken_streams_are_errors_by_kind(stream, status, error):
    assert feed(stream, status=status).error == error


def test_unstreamed_reply_and_request_bodies():
    rec = Record(0.0)
    sink = OllamaJsonSink(rec)
    sink.on_status(200, 0.0)
    sink.on_body(json.dumps({"message": {"content": "abc"}, **DONE}).encode(), 1.0)
    sink.finish()
    assert rec.error is None and rec.output_tokens == 3 and not rec.chunks and math.isnan(rec.first)
    chat = json.loads(request_body("ollama-chat", "m", Prompt("hi"), 5, True, {"temperature": 0}))
    assert chat == {"model": "m", "stream": True, "options": {"num_predict": 5, "temperature": 0},
                    "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    gen = json.loads(request_body("ollama-generate", "m", Prompt("hi", max_tokens=9), 5, False, {}))
    assert gen["prompt"] == "hi" and gen["options"] == {"num_predict": 9} and gen["stream"] is False


def test_server_reported_rate_beside_the_clients():
    recs = []
    for _ in range(4):
        r = Record(0.0)
        r.chunks = [0.1 + 0.01 * i for i in range(5)]  # client: 4 gaps of 10 ms -> 100 tok/s
        r.output_tokens, r.server_decode_s = 5, 0.0625  # server: 5 tokens in 62.5 ms -> 80 tok/s
        recs.append(r)
    s = server_reported(Records.of(recs))
    assert s is not None and s["requests"] == 4
    assert s["decode_tokens_per_s"] == pytest.approx(80.0) and s["client_decode_tokens_per_s"] == pytest.approx(100.0)
    assert s["client_vs_server"] == pytest.approx(1.25)
    assert server_reported(Records.of([Record(0.0)])) is None
