"""A ground-truth OpenAI-style stream server: it records the time it writes every chunk.

A measuring instrument needs a reference. This server sleeps a known time before the first token and
between tokens, stamps each write with ``perf_counter()`` (CLOCK_MONOTONIC, shared by processes on
one machine), and serves those stamps at ``GET /truth`` so tests and the perf script can compare the
client's TTFT and ITL with what really happened (``GET /truth/clock`` relates them to its wall clock).
It also speaks Ollama's native API (``/api/chat``, ``/api/generate``: NDJSON with Ollama's counts and
durations), as a test double of Ollama, which cannot run here. Run it in its own process, so the
client's event loop cannot delay it:

    python -m pytest_ubench.testing.truthserver --port 8011 --ttft-ms 40 --itl-ms 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
from pathlib import Path
from time import perf_counter, time
from typing import Any

import httptools

from ..interrupts import stopped


class _Request:
    def __init__(self) -> None:
        self.url = b""
        self.body = b""
        self.complete = False
        self.authorization = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self.authorization = value

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


class TruthServer:
    def __init__(
        self,
        ttft_ms: float,
        itl_ms: float,
        usage: str = "separate",
        die_after: int | None = None,
        slots: int | None = None,
        api_key: str | None = None,
    ) -> None:
        # api_key: generation needs "Authorization: Bearer <key>", like vLLM started with --api-key
        self.authorization = f"Bearer {api_key}".encode() if api_key else None
        self.rejected = 0
        self.ttft = ttft_ms / 1000.0
        self.itl = itl_ms / 1000.0
        self.usage = usage  # "separate" (OpenAI/vLLM), "final" (with finish_reason), "none"
        self.die_after = die_after
        self.served = 0
        self.truth: list[dict[str, Any]] = []
        # slots: at most this many completions at once, the rest wait in line, like a model server's
        # batch slots: a known capacity for queueing and knee tests
        self.slots = asyncio.Semaphore(slots) if slots else None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                req = _Request()
                parser = httptools.HttpRequestParser(req)
                while not req.complete:
                    data = await reader.read(65536)
                    if not data:
                        return
                    parser.feed_data(data)
                received = perf_counter()
                path = req.url.split(b"?")[0]
                if path == b"/health":
                    await self._send(writer, 200, b'{"status":"ok"}')
                elif path == b"/truth":
                    await self._send(writer, 200, json.dumps(self.truth).encode())
                elif path == b"/truth/clock":  # to put the stamps on this machine's wall clock
                    await self._send(writer, 200, json.dumps({"perf_counter": perf_counter(), "time": time()}).encode())
                elif path == b"/api/version":  # Ollama's health path
                    await self._send(writer, 200, b'{"version":"0.0.0-truthserver"}')
                elif path == b"/api/pull":  # Ollama's model download: nothing to fetch here
                    await self._send(writer, 200, b'{"status":"success"}')
                elif path == b"/truth/rejected":
                    await self._send(writer, 200, json.dumps({"rejected": self.rejected}).encode())
                elif self.authorization is not None and req.authorization != self.authorization:
                    self.rejected += 1
                    await self._send(writer, 401, b'{"error":"Unauthorized"}')
                elif path == b"/truth/reset":
                    self.truth.clear()
                    await self._send(writer, 200, b"{}")
                elif path in (b"/api/chat", b"/api/generate"):  # Ollama's native API, as a double
                    self.served += 1
                    await self._ollama(writer, json.loads(req.body or b"{}"), received, path)
                elif path in (b"/v1/chat/completions", b"/v1/completions"):
                    self.served += 1
                    if self.die_after is not None and self.served > self.die_after:
                        os._exit(3)  # a server crashing mid-run, for failure tests
                    body = json.loads(req.body or b"{}")
                    if self.slots is None:
                        await self._complete(writer, body, received, path)
                    else:
                        async with self.slots:
                            await self._complete(writer, body, perf_counter(), path)
                else:
                    await self._send(writer, 404, b'{"error":"not found"}')
        except (ConnectionError, httptools.HttpParserError):
            pass
        finally:
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()

    async def _complete(self, writer: asyncio.StreamWriter, body: dict[str, Any], received: float, path: bytes) -> None:
        n = int(body.get("max_tokens", 16))
        chat = path == b"/v1/chat/completions"
        usage = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
        writes: list[float] = []
        if not body.get("stream"):
            await asyncio.sleep(self.ttft + self.itl * max(n - 1, 0))
            whole: dict[str, Any] = {"index": 0, "finish_reason": "length"}
            whole |= {"message": {"role": "assistant", "content": "x" * n}} if chat else {"text": "x" * n}
            writes.append(perf_counter())
            await self._send(writer, 200, json.dumps({"choices": [whole], "usage": usage}).encode())
            self.truth.append({"received": received, "writes": writes})
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")

        def chunk(obj: dict[str, Any] | str) -> bytes:
            return _chunked(b"data: " + (obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()) + b"\n\n")

        deadline = received + self.ttft
        for i in range(n):
            delay = deadline - perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            last = i == n - 1
            delta = {"content": "x"}
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length" if last else None}
            choice |= {"delta": delta} if chat else {"text": "x"}
            obj: dict[str, Any] = {"choices": [choice]}
            if last and self.usage == "final":
                obj["usage"] = usage
            writes.append(perf_counter())
            writer.write(chunk(obj))
            deadline += self.itl
        if self.usage == "separate":
            writer.write(chunk({"choices": [], "usage": usage}))
        writer.write(chunk("[DONE]") + b"0\r\n\r\n")
        await writer.drain()
        self.truth.append({"received": received, "writes": writes})

    async def _ollama(self, writer: asyncio.StreamWriter, body: dict[str, Any], received: float, path: bytes) -> None:
        """Ollama's NDJSON stream (or one object): one token per line, then ``done`` with its counts and
        durations (ns) as Ollama reports them: prompt processing as the TTFT, generation as n x ITL."""
        n = int((body.get("options") or {}).get("num_predict", 16))
        chat = path == b"/api/chat"

        def token(text: str) -> dict[str, Any]:
            return {"model": body.get("model"), **({"message": {"role": "assistant", "content": text}} if chat
                                                    else {"response": text}), "done": False}  # fmt: skip

        done = {**token(""), "done": True, "done_reason": "length", "prompt_eval_count": 7,
                "prompt_eval_duration": int(self.ttft * 1e9), "eval_count": n, "eval_duration": int(n * self.itl * 1e9),
                "total_duration": int((self.ttft + n * self.itl) * 1e9)}  # fmt: skip
        writes: list[float] = []
        if body.get("stream") is False:
            await asyncio.sleep(self.ttft + self.itl * max(n - 1, 0))
            whole = done | token("x" * n) | {"done": True}
            writes.append(perf_counter())
            await self._send(writer, 200, json.dumps(whole).encode())
            self.truth.append({"received": received, "writes": writes})
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")

        def chunk(obj: dict[str, Any]) -> bytes:
            return _chunked(json.dumps(obj).encode() + b"\n")

        deadline = received + self.ttft
        for _ in range(n):
            delay = deadline - perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writes.append(perf_counter())
            writer.write(chunk(token("x")))
            deadline += self.itl
        writer.write(chunk(done) + b"0\r\n\r\n")
        await writer.drain()
        self.truth.append({"received": received, "writes": writes})


def _chunked(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (Transfer-Encoding: chunked)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def serve(host: str, port: int, server: TruthServer, tls: ssl.SSLContext | None = None) -> None:
    srv = await asyncio.start_server(server.handle, host, port, backlog=1024, ssl=tls)
    print(f"truthserver listening on {host}:{port}", flush=True)
    async with srv:
        await stopped()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ttft-ms", type=float, default=40.0)
    ap.add_argument("--itl-ms", type=float, default=8.0)
    ap.add_argument("--usage", choices=["separate", "final", "none"], default="separate")
    ap.add_argument("--die-after", type=int, default=None, help="exit after serving N completions")
    ap.add_argument("--slots", type=int, default=None, help="serve at most N completions at once (default: no limit)")
    ap.add_argument(
        "--slow-once",
        type=Path,
        metavar="FILE",
        help="while FILE exists, the first server started "
        "deletes it and runs 1.5x slower (TTFT and ITL): a session that starts in a slow state, once",
    )
    ap.add_argument("--api-key-env", metavar="NAME", help="require 'Authorization: Bearer' with the key in $NAME")
    ap.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM) ...")
    ap.add_argument("--tls-key", help="... and this key")
    args = ap.parse_args(argv)
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)

    async def start() -> None:
        slow = 1.0
        if args.slow_once is not None and args.slow_once.exists():
            args.slow_once.unlink()
            slow = 1.5
        key = os.environ[args.api_key_env] if args.api_key_env else None
        server = TruthServer(args.ttft_ms * slow, args.itl_ms * slow, args.usage, args.die_after, args.slots, key)
        await serve(args.host, args.port, server, tls)

    asyncio.run(start())


if __name__ == "__main__":
    main()
