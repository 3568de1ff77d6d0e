"""A lean HTTP/1.1 client on asyncio protocols and llhttp (``httptools``): the load engine's hot path.

Measured in the skeleton issue: httpx tops out near 210 req/s per process and adds tens of
milliseconds to TTFT at 64 streams, so it is kept for control-plane calls only. Here every read is
stamped with ``perf_counter()`` the moment the event loop hands it over, before any parsing, and the
body is passed straight to a sink. Parsing (chunked encoding, keep-alive) is httptools' job.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from time import perf_counter
from typing import Protocol

import httptools


class BodySink(Protocol):
    """Receives a response as it arrives; ``t`` is when the bytes were read."""

    def on_status(self, status: int, t: float) -> None: ...
    def on_body(self, data: bytes, t: float) -> None: ...


class RequestFailed(Exception):
    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def no_delay(transport: asyncio.BaseTransport) -> None:
    """Small writes leave at once: a request waiting on Nagle's algorithm would add up to 40 ms."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.open = False
        self._parser: httptools.HttpResponseParser | None = None
        self._sink: BodySink | None = None
        self._done: asyncio.Future[float] | None = None
        self._now = 0.0
        self._keep_alive = True
        self.served = 0  # completed responses: a reused connection may have been closed by the server

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        self.open = True
        no_delay(transport)

    def data_received(self, data: bytes) -> None:
        self._now = perf_counter()
        parser = self._parser
        if parser is None:
            self._fail(RequestFailed("malformed_http", "data received with no request outstanding"))
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(RequestFailed("malformed_http", str(exc)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(RequestFailed("disconnected", "server closed the connection mid-response"))

    # httptools callbacks
    def on_headers_complete(self) -> None:
        assert self._parser is not None and self._sink is not None
        self._keep_alive = self._parser.should_keep_alive()
        self._sink.on_status(self._parser.get_status_code(), self._now)

    def on_body(self, body: bytes) -> None:
        assert self._sink is not None
        self._sink.on_body(body, self._now)

    def on_message_complete(self) -> None:
        done = self._done
        self._parser = self._sink = self._done = None
        self.served += 1
        if not self._keep_alive:
            self.close()
        if done is not None and not done.done():
            done.set_result(self._now)

    # client side
    def send(self, raw: bytes, sink: BodySink) -> asyncio.Future[float]:
        """Write a request; the future resolves to the time the response completed."""
        assert self.transport is not None and self._done is None
        self._sink = sink
        self._parser = httptools.HttpResponseParser(self)
        done = self._done = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(raw)
        except (RuntimeError, OSError) as exc:  # the peer closed it under us (uvloop: "handler is closed")
            self._fail(RequestFailed("connection_closed", str(exc)))
        return done

    def _fail(self, exc: RequestFailed) -> None:
        done = self._done
        self._parser = self._sink = self._done = None
        if done is not None and not done.done():
            done.set_exception(exc)
        self.close()

    def abort(self, kind: str) -> None:
        """Give up on the outstanding request (timeout); the connection cannot be reused."""
        self._fail(RequestFailed(kind))

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Idle keep-alive connections to one host; a new one is opened whenever none is free."""

    def __init__(self, host: str, port: int, connect_timeout: float, tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.tls = tls
        self._idle: list[Connection] = []
        # Cleared when the server turns out to close connections it announced as keep-alive
        # (llama.cpp's server does after every streamed response).
        self.reuse = True
        self._all: set[Connection] = set()

    def take(self) -> Connection | None:
        """An idle open connection, if there is one (no await on the hot path)."""
        while self._idle:
            conn = self._idle.pop()
            if conn.open:
                return conn
        return None

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    Connection, self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls else None
                ),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            raise RequestFailed("connect", f"{self.host}:{self.port}: {exc}") from None
        self._all.add(conn)
        return conn

    def stop_reusing(self) -> None:
        """The server closes connections it announced as keep-alive: none is reused from here on, and the
        idle ones are closed now (each would only fail its next request)."""
        self.reuse = False
        for conn in self._idle:
            conn.close()
            self._all.discard(conn)
        self._idle.clear()

    def release(self, conn: Connection) -> None:
        if not self.reuse:
            conn.close()
        if conn.open:
            self._idle.append(conn)
        else:
            self._all.discard(conn)

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._idle.clear()


def build_request(method: str, host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """Serialise a request once, so the hot path only writes bytes."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
