from __future__ import annotations

import json

import pytest

from pytest_ubench.load.dataset import Prompt
from pytest_ubench.load.responses import JsonSink, StreamSink
from pytest_ubench.metrics.columns import Records
from pytest_ubench.metrics.record_files import from_arrow, to_arrow
from pytest_ubench.metrics.records import Record
from pytest_ubench.protocols.openai import request_body


def sse(*objs: object) -> bytes:
    return b"".join(b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n\n" for o in objs)


def delta(text: str, finish: str | None = None, usage: dict | None = None) -> dict:
    obj: dict = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
    if usage:
        obj["usage"] = usage
    return obj


USAGE = {"prompt_tokens": 5, "completion_tokens": 3}


def feed(stream: bytes, step: int | None = None) -> Record:
    rec = Record(0.0)
    sink = StreamSink(rec)
    sink.on_status(200, 0.0)
    pieces = [stream] if step is None else [stream[i : i + step] for i in range(0, len(stream), step)]
    for i, p in enumerate(pieces):
        sink.on_body(p, float(i + 1))
    sink.finish()
    return rec


def test_usage_in_a_separate_last_chunk_openai_vllm_style():
    rec = feed(
        sse(
            {"choices": [{"delta": {"role": "assistant"}}]},
            delta("a"),
            delta("b"),
            delta("c", "length"),
            {"choices": [], "usage": USAGE},
            b"[DONE]",
        )
    )
    assert rec.error is None
    assert (rec.output_tokens, rec.prompt_tokens, rec.tokens_from) == (3, 5, "usage")
    assert len(rec.chunks) == 3  # the role-only chunk is not a token


def test_usage_in_the_final_chunk_with_finish_reason_llamacpp_style():
    rec = feed(sse(delta("a"), delta("b"), delta("c", "length", USAGE), b"[DONE]"))
    assert (rec.output_tokens, rec.tokens_from, rec.error) == (3, "usage", None)


def test_without_usage_tokens_are_counted_and_labelled():
    rec = feed(sse(delta("a"), delta("b", "stop"), b"[DONE]"))
    assert (rec.output_tokens, rec.tokens_from) == (2, "chunks")


def test_events_split_across_reads_byte_by_byte():
    stream = sse(delta("a"), delta("b"), delta("c", "length", USAGE), b"[DONE]").replace(b"\n", b"\r\n")
    rec = feed(stream, step=1)
    assert rec.error is None and rec.output_tokens == 3 and len(rec.chunks) == 3
    # each chunk is stamped with the read that completed its event, in order
    assert rec.chunks == sorted(rec.chunks) and rec.first == rec.chunks[0]


def test_completions_text_chunks():
    rec = feed(
        sse(
            {"choices": [{"text": "x", "finish_reason": None}]},
            {"choices": [{"text": "y", "finish_reason": "length"}]},
            b"[DONE]",
        )
    )
    assert len(rec.chunks) == 2 and rec.error is None


def test_truncated_stream_is_malformed_not_short():
    rec = feed(sse(delta("a"), delta("b")))
    assert rec.error == "malformed_stream"


def test_garbage_is_malformed():
    rec = feed(b"data: {not json\n\n" + sse(delta("a", "stop"), b"[DONE]"))
    assert rec.error == "malformed_stream"


def test_http_error_status():
    rec = Record(0.0)
    sink = StreamSink(rec)
    sink.on_status(503, 0.0)
    sink.on_body(b'{"error": "overloaded"}', 1.0)
    sink.finish()
    assert rec.error == "http_503" and rec.status == 503


def test_non_streaming_response():
    rec = Record(0.0)
    sink = JsonSink(rec)
    sink.on_status(200, 0.0)
    sink.on_body(json.dumps({"choices": [{"message": {"content": "hi"}}], "usage": USAGE}).encode(), 1.0)
    sink.finish()
    assert (rec.output_tokens, rec.tokens_from, rec.error) == (3, "usage", None)


@pytest.mark.parametrize("protocol", ["openai-chat", "openai-completions"])
def test_request_body(protocol):
    body = json.loads(request_body(protocol, "m", Prompt("hello"), 16, True, {"temperature": 0.5}))
    assert body["max_tokens"] == 16 and body["stream"] and body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.5
    assert ("messages" in body) == (protocol == "openai-chat")


def test_usage_on_every_chunk_gives_the_tokens_each_chunk_carried():
    """vLLM with stream_options.continuous_usage_stats: cumulative usage on each chunk. A chunk that carries
    two tokens (vLLM packs them under load) counts twice in the per-token ITL, at half its gap."""

    def u(n: int) -> dict:
        return {"prompt_tokens": 5, "completion_tokens": n}

    # one event per body piece: chunks at t = 1, 2, 3, 4 carrying 1, 1, 2 and 1 tokens
    stream = sse(delta("a", usage=u(1)), delta("b", usage=u(2)), delta("cd", usage=u(4)),
                 delta("e", "stop", u(5)), b"[DONE]")  # fmt: skip
    pieces = [p + b"\n\n" for p in stream.split(b"\n\n") if p]
    rec = Record(0.0)
    sink = StreamSink(rec)
    sink.on_status(200, 0.0)
    for i, p in enumerate(pieces):
        sink.on_body(p, float(i + 1))
    sink.finish()
    rec.start, rec.end = 0.0, 5.0
    assert rec.ok and rec.chunks == [1.0, 2.0, 3.0, 4.0] and rec.chunk_tokens == [1, 2, 4, 5]
    values = Records.of([rec]).values()
    assert list(values.itl_ms) == [1000.0, 1000.0, 1000.0]  # per chunk
    assert list(values.itl_token_ms) == [1000.0, 500.0, 500.0, 1000.0]  # per token: 4 tokens after the first
    again = from_arrow(to_arrow(Records.of([rec])))  # as written to Parquet and read back
    assert next(iter(again)).chunk_tokens == [1, 2, 4, 5]
    assert list(again.values().itl_token_ms) == list(values.itl_token_ms)


def test_usage_only_at_the_end_gives_no_per_token_itl():
    rec = feed(sse(delta("a"), delta("b"), delta("c", "stop"), {"choices": [], "usage": USAGE}, b"[DONE]"))
    assert rec.ok and rec.chunk_tokens == [] and len(Records.of([rec]).values().itl_token_ms) == 0
