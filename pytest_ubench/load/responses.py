"""How HTTP responses are read as their bytes arrive: framed streams (SSE events, NDJSON lines) and
whole JSON bodies, each judged when complete. The OpenAI-compatible completions reader (``sink_for``) is
the engine's default: the wire format most inference servers speak.

Token counts come from the server's ``usage`` wherever it is sent (llama.cpp and vLLM put it in
different chunks: both are read); counting content chunks is the labelled fallback. A stream that
ends without ``[DONE]`` or a finish reason is an error, not a short success. Responses are parsed
with orjson: measured +13 % requests/s for one client process over the standard library's json.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..metrics.records import Record

# The most a frame (an SSE event, an NDJSON line) or a whole JSON body may hold before the response is
# given up as ``frame_too_large`` / ``response_too_large``: memory stays bounded whatever a server sends.
# Set per run from ``workload.max_frame_bytes`` (``set_frame_limit``; one engine runs per process).
FRAME_LIMIT = 4 << 20
LONG_FRAME = 1 << 16  # a frame this long and unfinished is kept in a growing buffer (linear, not quadratic)


def set_frame_limit(nbytes: int) -> None:
    global FRAME_LIMIT
    FRAME_LIMIT = nbytes


def count_of(value: Any) -> int | None:
    """A token count as servers send it: a non-negative integer (None: not a count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _take_usage(rec: Record, usage: Any) -> bool:
    """Token counts from a ``usage`` object; False when it is not one (the reply is malformed)."""
    if not isinstance(usage, dict):
        return False
    done, prompt = usage.get("completion_tokens"), usage.get("prompt_tokens")
    if (done is not None and count_of(done) is None) or (prompt is not None and count_of(prompt) is None):
        return False
    if done is not None:
        rec.output_tokens = done
        rec.tokens_from = "usage"
    if prompt is not None:
        rec.prompt_tokens = prompt
    return True


class _Base:
    __slots__ = ("body", "rec", "status")

    def __init__(self, rec: Record) -> None:
        self.rec = rec
        self.status = 0
        self.body = b""  # the start of a body under an error status, for the message

    def on_status(self, status: int, t: float) -> None:
        self.status = status
        self.rec.status = status

    def _http_error(self) -> bool:
        if self.status != 200:
            self.rec.error = f"http_{self.status}"
            return True
        return False


class Framed(_Base):
    """A streamed body cut into frames as bytes arrive (SSE events, NDJSON lines); every frame is read
    at the time its bytes arrived. Each byte is scanned once (a frame split over reads is kept in a
    buffer and searched only from where the last search ended), and a frame over ``FRAME_LIMIT`` ends
    the response as ``frame_too_large`` without keeping its bytes."""

    __slots__ = ("finished", "pending", "too_large")
    SEP = b"\n"

    def __init__(self, rec: Record) -> None:
        super().__init__(rec)
        self.finished = False
        self.pending: bytes | bytearray = b""  # the start of a frame whose end has not arrived
        self.too_large = False

    def on_body(self, data: bytes, t: float) -> None:
        self.rec.nbytes += len(data)
        if self.status != 200:
            self.body += data[: 512 - len(self.body)]
            return
        if self.too_large:
            return
        pending, sep = self.pending, self.SEP
        if pending and pending[-1] == 13 and data[:1] == b"\n":  # a CRLF split between two reads
            pending = pending[:-1]
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        scan = 0
        buf: bytes | bytearray
        if not pending:
            buf = data
        else:
            scan = max(0, len(pending) - len(sep) + 1)  # the pending bytes hold no separator
            if isinstance(pending, bytearray):  # a long frame grows in place: no copy of what came before
                pending += data
                buf = pending
            else:
                buf = pending + data
        start = 0
        while (end := buf.find(sep, scan)) >= 0:
            self._frame(buf[start:end], t)
            start = scan = end + len(sep)
        rest = len(buf) - start
        if rest > FRAME_LIMIT:
            self.too_large, self.pending = True, b""
            self.rec.error = "frame_too_large"
        elif isinstance(buf, bytearray):
            del buf[:start]
            self.pending = buf
        elif rest > LONG_FRAME:
            self.pending = bytearray(buf[start:])
        else:
            self.pending = buf[start:]

    def _frame(self, frame: bytes | bytearray, t: float) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        """The body has ended: a format may still read what is left (NDJSON's unterminated last line)."""

    def finish(self) -> None:
        rec = self.rec
        if self._http_error() or self.too_large:
            return
        self._end()
        if rec.error is None and (not self.finished or self.pending.strip()):
            rec.error = "malformed_stream"  # no end marker, or bytes after the last frame
        if rec.chunks:
            rec.first = rec.chunks[0]
        if rec.output_tokens is None:
            rec.output_tokens = len(rec.chunks)
            rec.tokens_from = "chunks"


class StreamSink(Framed):
    """Parses Server-Sent Events as bytes arrive; each content chunk is stamped with its read time."""

    __slots__ = ()
    SEP = b"\n\n"

    def _frame(self, event: bytes | bytearray, t: float) -> None:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue  # comments, event names, ids
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.finished = True
                continue
            try:
                obj = orjson.loads(payload)
            except ValueError:
                obj = None
            if not isinstance(obj, dict):
                self.rec.error = "malformed_stream"
                continue
            if "error" in obj:
                self.rec.error = "stream_error"
            content = False
            try:  # a choice or delta of the wrong type fails the request, never the run
                for choice in obj.get("choices") or ():
                    delta = choice.get("delta")
                    text = (delta.get("content") or delta.get("reasoning_content")) if delta else choice.get("text")
                    if text:
                        self.rec.chunks.append(t)
                        content = True
                    if choice.get("finish_reason"):
                        self.finished = True
            except (AttributeError, TypeError):
                self.rec.error = "malformed_stream"
            usage = obj.get("usage")
            if usage:
                if not _take_usage(self.rec, usage):
                    self.rec.error = "malformed_stream"
                elif content and self.rec.output_tokens is not None:  # usage on every chunk: tokens per chunk
                    self.rec.chunk_tokens.append(self.rec.output_tokens)


class JsonSink(_Base):
    """A non-streaming response: the whole body is parsed when it has arrived (at most ``FRAME_LIMIT``
    bytes of it are kept: a larger one is ``response_too_large``)."""

    __slots__ = ("data",)

    def __init__(self, rec: Record) -> None:
        super().__init__(rec)
        self.data = bytearray()

    def on_body(self, data: bytes, t: float) -> None:
        self.rec.nbytes += len(data)
        if len(self.data) + len(data) <= FRAME_LIMIT:
            self.data += data

    def _parsed(self) -> dict[str, Any] | None:
        """The JSON body once it is complete; None (with the record's error set) when there is none."""
        if self._http_error():
            return None
        if self.rec.nbytes > len(self.data):
            self.rec.error = "response_too_large"
            return None
        try:
            obj = orjson.loads(self.data)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            self.rec.error = "malformed_response"
            return None
        return obj

    def finish(self) -> None:
        rec = self.rec
        if (obj := self._parsed()) is None:
            return
        choices = obj.get("choices")
        usage = obj.get("usage")
        if not isinstance(choices, list) or not all(_a_choice(c) for c in choices):
            rec.error = "malformed_response"
            return
        if usage is not None and not _take_usage(rec, usage):
            rec.error = "malformed_response"
            return
        if rec.output_tokens is None:
            rec.output_tokens = sum(1 for c in choices if _text(c))
            rec.tokens_from = "chunks"


def _a_choice(choice: Any) -> bool:
    """An object, whose ``message`` (chat) is an object too where it is given."""
    return isinstance(choice, dict) and isinstance(choice.get("message", {}), dict | None)


def _text(choice: dict[str, Any]) -> Any:
    """A non-streamed choice's text (chat: ``message.content``; completions: ``text``)."""
    return (choice.get("message") or {}).get("content") or choice.get("text")


def sink_for(stream: bool, rec: Record) -> StreamSink | JsonSink:
    return StreamSink(rec) if stream else JsonSink(rec)
