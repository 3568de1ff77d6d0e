"""A load balancer in front of a service's replicas: nginx (the distribution's) started by the harness as
one more part of the service, so the clients send every request to one URL and the balancer spreads them,
as a production deployment would. Its access log names the replica that served each request
(``$upstream_addr``), which gives the per-replica counts the clients cannot see through it."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from ..recipes.deployment import Front, ServiceSpec
from .base import ServiceError
from .ports import free_port

# How nginx spreads requests for each routing rule (its default is round-robin: no directive).
BALANCE = {"least-outstanding": "least_conn;", "round-robin": "", "random": "random;"}
LOG = "access.log"


def binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")  # a user's PATH may lack sbin
    if found is None:
        raise ServiceError("service.front: nginx is not on PATH (Debian: apt-get install nginx-light)")
    return found


def config(where: Path, host: str, port: int, upstreams: list[tuple[str, int]], front: Front, routing: str) -> str:
    """nginx's configuration: one upstream of the replicas, streamed answers passed on as they come
    (``proxy_buffering off``: SSE chunks are not held back), and an access log of which replica served each
    request, when, in how long, with what status. A new connection to a replica per request: llama.cpp
    closes its keep-alive connections after a stream, and nginx reusing a closed one failed the request
    (measured: 2 of 262 answered 502, and the replicas then set aside)."""
    # max_fails=0: nginx never sets a replica aside on its own (a refused connection still goes to the
    # next one), so what the clients measure is the replicas, not nginx's failure accounting.
    servers = "\n".join(f"        server {h}:{p} max_fails=0;" for h, p in upstreams)
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    temp = "\n".join(f"    {kind}_temp_path {where / (kind + '-temp')};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    return f"""daemon off;
worker_processes {front.workers};
pid {where / "nginx.pid"};
error_log {where / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
    log_format ubench '$msec $upstream_addr $status $request_time $upstream_status';
    access_log {where / LOG} ubench;
{temp}
    upstream replicas {{
        {BALANCE[routing]}
{servers}
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout {front.timeout_s:g}s;
            proxy_send_timeout {front.timeout_s:g}s;
            proxy_next_upstream error;
        }}
    }}
}}
"""


def spec(where: Path, service: ServiceSpec, upstreams: list[tuple[str, int]]) -> ServiceSpec:
    """The front as a service of its own: nginx with that configuration, healthy once the service's health
    path answers through it."""
    assert service.front is not None
    where.mkdir(parents=True, exist_ok=True)
    port = free_port(service.host)
    conf = where / "nginx.conf"
    conf.write_text(config(where, service.host, port, upstreams, service.front, service.routing), encoding="utf-8")
    return ServiceSpec(
        command=[binary(), "-p", str(where), "-c", str(conf), "-e", str(where / "error.log")],
        host=service.host,
        port=port,
        health=service.health,
        tls=False,
    )


def served(where: Path, upstreams: list[tuple[str, int]], start: float, end: float) -> list[dict[str, Any]]:
    """Per replica, the requests nginx passed to it that ended within [start, end] (epoch seconds): all,
    and those answered with a status below 400."""
    total: Counter[str] = Counter()
    ok: Counter[str] = Counter()
    path = where / LOG
    if path.exists():
        with path.open(encoding="utf-8", errors="replace") as lines:  # a long run's log is read, not held
            for line in lines:
                fields = line.split()
                if len(fields) < 3 or not start <= float(fields[0]) <= end:
                    continue
                last = fields[1].split(",")[-1].strip()  # tried several: the one that answered
                total[last] += 1
                ok[last] += fields[2].isdigit() and int(fields[2]) < 400
    return [{"total": total[f"{h}:{p}"], "ok": ok[f"{h}:{p}"]} for h, p in upstreams]
