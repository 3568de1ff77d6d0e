"""A key-checking front for a server that has no API key of its own (Ollama, Triton), started in the
service's job (``service.key_front``): the server listens on its node's loopback, this listens where the
recipe says and lets a connection through to it only once its first request carries the deployment's key
(``Authorization: Bearer``, read from the key file; compared in constant time).

    python -m pytest_ubench.orchestrators.key_front --listen HOST:PORT --to 127.0.0.1:PORT --key-file F \\
        [--open /health] [--open /metrics]

An authorised connection is then piped both ways untouched, so streams pass as they come (the front adds
one loopback hop). A request for an ``--open`` path (the health check, Prometheus's scrape) needs no key
and is passed on alone, with ``Connection: close``: nothing else the connection sends reaches the server.
Anything else gets 401 and the connection is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
from pathlib import Path

from ..interrupts import stopped

HEAD_LIMIT = 64 * 1024
_UNAUTHORIZED = (b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 25\r\n"
                 b"Connection: close\r\n\r\n" b'{"error": "Unauthorized"}')  # fmt: skip
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Front:
    def __init__(self, backend: tuple[str, int], key: bytes, open_paths: set[str]) -> None:
        self.backend = backend
        self.expected = b"Bearer " + key
        self.open_paths = open_paths

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                writer.write(_BAD)
                return
            lines = head[:-4].split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts) != 3:
                writer.write(_BAD)
                return
            path = parts[1].split(b"?")[0].decode("latin-1")
            given = b""
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"authorization":
                    given = value.strip()
            if path in self.open_paths and not hmac.compare_digest(given, self.expected):
                await self._one(head, lines, writer)
            elif hmac.compare_digest(given, self.expected):
                await self._pipe(head, reader, writer)
            else:
                writer.write(_UNAUTHORIZED)
        except ConnectionError:
            pass
        finally:
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()

    async def _one(self, head: bytes, lines: list[bytes], writer: asyncio.StreamWriter) -> None:
        """An open path: that request alone (its head: a GET has no body), and the server's one answer back,
        read to its end by its own framing (a server may keep the connection open whatever it is asked)."""
        kept = [line for line in lines if line.split(b":")[0].strip().lower() != b"connection"]
        r2, w2 = await asyncio.open_connection(*self.backend, limit=HEAD_LIMIT)
        try:
            w2.write(b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n")
            await w2.drain()
            answer = await r2.readuntil(b"\r\n\r\n")
            writer.write(answer)
            fields = {}
            for line in answer[:-4].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                fields[name.strip().lower()] = value.strip().lower()
            if b"chunked" in fields.get(b"transfer-encoding", b""):
                while True:
                    size_line = await r2.readuntil(b"\r\n")
                    size = int(size_line.split(b";")[0], 16)
                    writer.write(size_line + await r2.readexactly(size + 2))
                    if size == 0:
                        break
            elif b"content-length" in fields:
                writer.write(await r2.readexactly(int(fields[b"content-length"])))
            else:
                while data := await r2.read(65536):
                    writer.write(data)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a broken answer: the client sees it cut short
        finally:
            w2.close()

    async def _pipe(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        r2, w2 = await asyncio.open_connection(*self.backend)
        w2.write(head)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.write_eof()

        try:
            await asyncio.gather(copy(reader, w2), copy(r2, writer))
        finally:
            w2.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


async def serve(listen: tuple[str, int], front: Front) -> None:
    server = await asyncio.start_server(front.handle, *listen, limit=HEAD_LIMIT, reuse_address=True)
    async with server:
        await stopped()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="pytest_ubench.orchestrators.key_front", description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", required=True, help="HOST:PORT to accept clients on")
    ap.add_argument("--to", required=True, help="HOST:PORT of the server (its node's loopback)")
    ap.add_argument("--key-file", required=True, type=Path, help="the deployment's key (never on the command line)")
    ap.add_argument("--open", action="append", default=[], help="a path served without the key (health, metrics)")
    args = ap.parse_args(argv)
    key = args.key_file.read_text(encoding="ascii").strip().encode()
    asyncio.run(serve(_address(args.listen), Front(_address(args.to), key, set(args.open))))


if __name__ == "__main__":
    main()
