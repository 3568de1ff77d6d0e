"""The key-checking front (orchestrators/key_front.py) between clients and a server without keys: the
ground-truth server behind it, whose own log of requests (/truth) says what got through."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import TRUTH, start

from pytest_ubench.orchestrators.local import LocalOrchestrator

pytestmark = pytest.mark.integration
KEY = "front-key-of-this-test-5d1e"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}


@pytest.fixture
def front(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(front URL, server URL): the truth server and the front in front of it, each started by the harness
    and healthy (the front's health check goes through its open path to the server)."""
    key_file = tmp_path / "k.key"
    key_file.write_text(KEY)
    server = start([*TRUTH, "--ttft-ms", "5", "--itl-ms", "1"], tmp_path / "server", "server")
    fronted = None
    try:
        fronted = start([sys.executable, "-m", "pytest_ubench.orchestrators.key_front", "--listen", "{host}:{port}",
                         "--to", f"127.0.0.1:{server.endpoint.port}", "--key-file", str(key_file), "--open",
                         "/health"], tmp_path / "front", "front")  # fmt: skip
        yield fronted.endpoint.url, server.endpoint.url
    finally:
        for dep in (fronted, server):
            if dep is not None:
                LocalOrchestrator().stop(dep)


def served(server: str) -> int:
    return len(httpx.get(server + "/truth", timeout=5).json())


def test_only_requests_with_the_key_reach_the_server(front: tuple[str, str]) -> None:
    url, server = front
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        answer = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=headers, timeout=5)
        assert answer.status_code == 401 and answer.json() == {"error": "Unauthorized"}
    assert served(server) == 0
    with httpx.Client(timeout=5, headers={"Authorization": f"Bearer {KEY}"}) as client:  # one kept-alive connection
        for _ in range(3):
            with client.stream("POST", url + "/v1/chat/completions", json=CHAT) as answer:
                events = [line for line in answer.iter_lines() if line.startswith("data: ")]
            assert answer.status_code == 200 and events[-1] == "data: [DONE]" and len(events) == 4 + 2
    assert served(server) == 3


def test_an_open_path_lets_that_request_alone_through(front: tuple[str, str]) -> None:
    """The health path needs no key; a request pipelined behind it on the same connection never reaches
    the server (the server's own log), and the connection is closed after the health answer."""
    url, server = front
    assert httpx.get(url + "/health", timeout=5).json() == {"status": "ok"}
    body = json.dumps(CHAT).encode()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)  # fmt: skip
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 200") == 1 and b'{"status":"ok"}' in answer and b"data:" not in answer
    assert served(server) == 0
