"""How much load can this machine's client deliver and still measure truthfully?

``ubenchai client calibrate`` runs open-loop steps of doubling rate against a local no-op server and
applies the client self-check to each; the answer is the highest rate at which the client kept up.
The server is nginx when it is installed (so the server is not the limit), else a built-in no-op
server in its own processes; with the built-in one the answer is a lower bound, and says so.

    python -m pytest_ubench.load.calibrate --serve PORT   # the built-in no-op server
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httptools

from ..metrics import client_check
from ..metrics.stats import summary
from ..orchestrators import watchdog
from ..orchestrators.ports import free_port
from . import engine, parallel, routing
from .http import build_request

BODY = b'{"choices":[{"index":0,"message":{"content":"x"}}],"usage":{"completion_tokens":1}}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


class _NoOp(asyncio.Protocol):
    """Answers every request on a keep-alive connection with the same small JSON body."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        self.transport.write(RESPONSE)


def serve(port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_NoOp, "127.0.0.1", port, reuse_port=True, backlog=4096)
        print("ready", flush=True)
        await server.serve_forever()

    with asyncio.Runner(loop_factory=engine.loop_factory()) as runner:
        runner.run(main())


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError(f"the no-op server exited with code {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the no-op server did not start")


@contextmanager
def noop_server(kind: str = "auto", processes: int = 1) -> Iterator[tuple[int, str]]:
    """A no-op HTTP server on loopback: (port, what it is); stopped on exit."""
    port = free_port("127.0.0.1")
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    use_nginx = kind == "nginx" or (kind == "auto" and nginx is not None)
    with tempfile.TemporaryDirectory() as tmp:
        if use_nginx:
            if nginx is None:
                raise RuntimeError("nginx was asked for but is not installed")
            conf = Path(tmp) / "nginx.conf"
            temp = " ".join(f"{k}_temp_path {tmp};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
            conf.write_text(
                f"daemon off; worker_processes {processes}; pid {tmp}/nginx.pid; error_log {tmp}/error.log;\n"
                "events { worker_connections 4096; }\n"
                f"http {{ access_log off; keepalive_requests 1000000; {temp}\n"
                f"  server {{ listen 127.0.0.1:{port}; location / {{ default_type application/json;"
                f" return 200 '{BODY.decode()}'; }} }} }}\n"
            )
            procs = [subprocess.Popen([nginx, "-c", str(conf), "-p", tmp], stderr=subprocess.DEVNULL)]
            what = f"nginx ({processes} worker(s))"
        else:
            cmd = [sys.executable, "-m", "pytest_ubench.load.calibrate", "--serve", str(port)]
            procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL) for _ in range(processes)]
            what = f"built-in no-op server ({processes} process(es)); the answer is a lower bound"
        for p in procs:
            watchdog.guard_process(p.pid)  # the no-op server stops with the harness, even one killed
        try:
            _wait_port(port, procs[0])
            yield port, what
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait()
                watchdog.release_process(p.pid)


@dataclass
class Step:
    rate: float
    achieved: float
    send_lag_p99_ms: float | None
    check: dict[str, Any]

    @property
    def kept_up(self) -> bool:
        return not self.check["bottleneck"]


def calibrate(
    port: int,
    workers: int,
    seconds: float = 3.0,
    start: float = 500.0,
    limit: float = 256_000.0,
    on_step: Callable[[Step], None] | None = None,
) -> list[Step]:
    """Double the rate until the client's self-check fails twice in a row (or ``limit``)."""
    req = build_request("POST", "127.0.0.1", port, "/v1/chat/completions", b"{}", {})
    steps: list[Step] = []
    misses = 0
    rate = start
    while rate <= limit and misses < 2:
        plan = engine.LoadPlan(
            [req],
            False,
            "open",
            rate=rate,
            duration_s=seconds,
            warmup_s=0.5,
            request_timeout_s=5.0,
            drain_timeout_s=2.0,
        )
        run = parallel.run(routing.Target("127.0.0.1", port), plan, workers)
        s = summary(run.measured, run.window_start, run.window_end)
        check = client_check.check(run.client, run.records, "open", run.window_start, run.window_end)
        if s["requests"]["failed"]:
            check["bottleneck"] = True
            check["reasons"].append(f"{s['requests']['failed']} requests failed: {s['requests']['errors']}")
        step = Step(rate, s["throughput"]["requests_per_s"], s["metrics"]["send_lag_ms"]["p99"], check)
        steps.append(step)
        if on_step is not None:
            on_step(step)
        misses = 0 if step.kept_up else misses + 1
        rate *= 2
    return steps


def trustworthy(steps: list[Step]) -> float | None:
    """The highest rate below the first step at which the client did not keep up."""
    best = None
    for step in steps:
        if not step.kept_up:
            break
        best = step.rate
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pytest_ubench.load.calibrate")
    ap.add_argument("--serve", type=int, metavar="PORT", required=True, help="run the built-in no-op server")
    args = ap.parse_args(argv)
    serve(args.serve)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
