"""A server that misbehaves on demand, for the instrument's robustness tests: every response shape the
protocols parse can be replaced by bytes of the test's choosing, and connections, side endpoints and
statuses can break in the ways real servers and proxies break.

    python -m pytest_ubench.testing.hostile --port 8000 --body '{"choices": [1]}'
    python -m pytest_ubench.testing.hostile --port 8000 --fault drip --tokenize nonjson

``--body`` (or ``--body-file``) is sent for every load request (any POST), with ``--status`` and
``--content-type``; ``--chunked`` sends it with chunked encoding. Faults (``--fault``): ``close``
(headers, then the connection closed), ``reset`` (RST after the request), ``drip`` (one byte a second),
``huge-frame`` (an SSE event of ``--huge-mb`` MB with no separator), ``keepalive-close`` (answers, then
closes a connection it announced as keep-alive), ``one-per-connection`` (answers the first request on a
connection it keeps alive, and closes it when a second one comes), ``storm`` (alternating 503 and 429 with
Retry-After).
Side endpoints: ``--health`` and ``--tokenize`` take ``ok``, ``drip`` (one byte a second, forever),
``hang`` (headers never sent), ``nonjson`` (200 with text that is not JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import struct
from pathlib import Path

import httptools

from ..interrupts import stopped

LATIN = "latin-1"


class _Request:
    def __init__(self) -> None:
        self.url = b""
        self.method = b""
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        self.complete = True


def _head(status: int, content_type: str, length: int | None, extra: str = "") -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n{size}{extra}\r\n").encode(LATIN)


class Hostile:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.body = Path(args.body_file).read_bytes() if args.body_file else args.body.encode()
        self.storm = itertools.cycle([(503, ""), (429, "Retry-After: 1\r\n")])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while True:
                req = _Request()
                parser = httptools.HttpRequestParser(req)
                while not req.complete:
                    data = await reader.read(65536)
                    if not data:
                        return
                    parser.feed_data(data)
                req.method = parser.get_method()
                path = req.url.split(b"?")[0].decode(LATIN)
                if self.args.fault == "one-per-connection" and served:
                    return  # kept alive, as announced, yet closed when used again (llama.cpp after a stream)
                served += 1
                if not await self.answer(path, req.method, writer):
                    return
        except (ConnectionError, httptools.HttpParserError):
            return
        finally:
            writer.close()

    async def answer(self, path: str, method: bytes, writer: asyncio.StreamWriter) -> bool:
        """Write one response; False when the connection is to end."""
        if path == "/health":
            return await self.side(self.args.health, b'{"status":"ok"}', writer)
        if path in ("/tokenize", "/detokenize"):
            ok = b'{"tokens":[1,2,3]}' if path == "/tokenize" else b'{"content":"abc"}'
            return await self.side(self.args.tokenize, ok, writer)
        fault = self.args.fault
        if fault == "close":
            writer.write(_head(200, self.args.content_type, len(self.body) + 100))
            await writer.drain()
            return False
        if fault == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if fault == "drip":
            writer.write(_head(self.args.status, self.args.content_type, len(self.body)))
            for i in range(len(self.body)):
                writer.write(self.body[i : i + 1])
                await writer.drain()
                await asyncio.sleep(1.0)
            return True
        if fault == "huge-frame":
            writer.write(_head(200, "text/event-stream", None))
            chunk = b"data: " + b"x" * (1 << 20)
            for _ in range(self.args.huge_mb):
                writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            return True
        if fault == "storm":
            status, extra = next(self.storm)
            text = b'{"error":"busy"}'
            writer.write(_head(status, "application/json", len(text), extra) + text)
            return True
        if self.args.chunked:
            writer.write(_head(self.args.status, self.args.content_type, None))
            writer.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(self.body), self.body) if self.body else b"0\r\n\r\n")
        else:
            writer.write(_head(self.args.status, self.args.content_type, len(self.body)) + self.body)
        await writer.drain()
        return bool(fault != "keepalive-close")

    async def side(self, how: str, ok: bytes, writer: asyncio.StreamWriter) -> bool:
        if how == "hang":
            await asyncio.sleep(3600)
        if how == "drip":
            writer.write(_head(200, "application/json", 10_000))
            while True:
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(1.0)
        body = b"<html>not json</html>" if how == "nonjson" else ok
        writer.write(_head(200, "application/json", len(body)) + body)
        await writer.drain()
        return True


async def _serve(args: argparse.Namespace) -> None:
    server = await asyncio.start_server(Hostile(args).handle, args.host, args.port)
    async with server:
        await stopped()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="pytest_ubench.testing.hostile")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--body", default=json.dumps({"choices": [{"message": {"content": "x"}}]}))
    ap.add_argument("--body-file")
    ap.add_argument("--status", type=int, default=200)
    ap.add_argument("--content-type", default="application/json")
    ap.add_argument("--chunked", action="store_true")
    faults = ["none", "close", "reset", "drip", "huge-frame", "keepalive-close", "one-per-connection", "storm"]
    ap.add_argument("--fault", choices=faults, default="none")
    ap.add_argument("--huge-mb", type=int, default=16)
    ap.add_argument("--health", choices=["ok", "drip", "hang", "nonjson"], default="ok")
    ap.add_argument("--tokenize", choices=["ok", "drip", "hang", "nonjson"], default="ok")
    asyncio.run(_serve(ap.parse_args(argv)))


if __name__ == "__main__":
    main()
