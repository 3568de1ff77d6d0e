"""Ollama's native API: ``/api/chat`` and ``/api/generate``, streamed as NDJSON (one JSON object per
line, one token per line in practice), or one JSON object when not streamed.

The last object (``done: true``) carries Ollama's own counts and timings: ``eval_count`` tokens
generated in ``eval_duration`` ns, ``prompt_eval_count`` prompt tokens. Token counts come from them;
``eval_duration`` is kept per request, so the results can set the server's decode rate beside the one
the client saw (``stats.server_reported``): a client that reads tokens late shows up as a gap.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import orjson

from ..load.dataset import Prompt
from ..load.planning import Planned, json_headers, url_path
from ..load.responses import Framed, JsonSink, count_of
from ..metrics.records import Record
from ..orchestrators.base import Endpoint
from ..recipes.sweep import Case
from .base import BaseProtocol
from .prompts import generation_plan

PATHS = {"ollama-chat": "/api/chat", "ollama-generate": "/api/generate"}


def request_body(
    protocol: str, model: str, prompt: Prompt, max_tokens: int, stream: bool, params: dict[str, Any]
) -> bytes:
    """``params`` are Ollama's model ``options`` (temperature, num_ctx, ...); ``num_predict`` caps output."""
    if prompt.body is not None:
        body: dict[str, Any] = {"model": model, **prompt.body, "stream": stream}
        return json.dumps(body, separators=(",", ":")).encode()
    options = {"num_predict": prompt.max_tokens or max_tokens, **params}
    body = {"model": model, "stream": stream, "options": options}
    if protocol == "ollama-chat":
        body["messages"] = prompt.messages or [{"role": "user", "content": prompt.text}]
    elif prompt.messages is not None:
        raise ValueError("chat 'messages' need protocol ollama-chat (ollama-generate takes a prompt)")
    else:
        body["prompt"] = prompt.text
    return json.dumps(body, separators=(",", ":")).encode()


class NdjsonSink(Framed):
    """Reads NDJSON as it arrives; each line with content is stamped with its read time. A stream
    without its ``done`` line is ``malformed_stream``; an ``error`` line is ``stream_error``."""

    __slots__ = ()

    def _frame(self, frame: bytes | bytearray, t: float) -> None:
        if line := frame.strip():
            self._line(line, t)

    def _line(self, line: bytes | bytearray, t: float) -> None:
        try:
            obj = orjson.loads(line)
        except ValueError:
            self.rec.error = "malformed_stream"
            return
        if not isinstance(obj, dict):
            self.rec.error = "malformed_stream"
            return
        if "error" in obj:
            self.rec.error = "stream_error"
            return
        message = obj.get("message")
        text = message.get("content") if isinstance(message, dict) else obj.get("response")
        if text:
            self.rec.chunks.append(t)
        if obj.get("done"):
            self.finished = True
            if not take_counts(self.rec, obj):
                self.rec.error = "malformed_stream"

    def _end(self) -> None:
        if line := self.pending.strip():  # a last line without its newline
            self.pending = b""
            self._line(line, self.rec.chunks[-1] if self.rec.chunks else float("nan"))


class OllamaJsonSink(JsonSink):
    """A non-streamed reply: one object, ``done: true``, with the counts and timings."""

    __slots__ = ()

    def finish(self) -> None:
        if (obj := self._parsed()) is None:
            return
        if "error" in obj:
            self.rec.error = "stream_error"
        elif not obj.get("done") or not take_counts(self.rec, obj):
            self.rec.error = "malformed_response"


def sink_for(stream: bool, rec: Record) -> NdjsonSink | OllamaJsonSink:
    return NdjsonSink(rec) if stream else OllamaJsonSink(rec)


def take_counts(rec: Record, done: dict[str, Any]) -> bool:
    """Ollama's counts and decode time from its last object; False when they are not numbers."""
    made, prompt, ns = done.get("eval_count"), done.get("prompt_eval_count"), done.get("eval_duration")
    if any(v is not None and count_of(v) is None for v in (made, prompt, ns)):
        return False
    if made is not None:
        rec.output_tokens = made
        rec.tokens_from = "usage"
    if prompt is not None:
        rec.prompt_tokens = prompt
    if ns:
        rec.server_decode_s = ns / 1e9
    return True


class Ollama(BaseProtocol):
    """``ollama-chat`` and ``ollama-generate``: NDJSON streams (or one object), Ollama's own counts."""

    names = ("ollama-chat", "ollama-generate")
    streams = True

    def plan(self, case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
        assert endpoint is not None
        w = case.recipe.workload
        path = url_path(endpoint) + PATHS[w.protocol]
        headers = json_headers(case, endpoint, stream_type="application/x-ndjson")
        return generation_plan(case, endpoint, duration_s, request_body, path, headers, partial(sink_for, w.stream))


OLLAMA = Ollama()
