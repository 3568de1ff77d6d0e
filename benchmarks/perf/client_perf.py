"""Measure the load client itself, next to references measured in the same run (ratios).

Not a test: prints figures. Needs Debian's nginx and wrk (installed when run as root):

    .venv/bin/python benchmarks/perf/client_perf.py [--seconds 5]

1. Non-streaming requests/s of one client process (64 connections) against nginx on loopback, next
   to wrk (1 thread) and to httpx and aiohttp loops; client and nginx pinned to different cores.
2. SSE events/s parsed from a static event stream served by nginx, next to wrk's byte rate.
3. Open-loop send lag (how late each request left versus its schedule) at 2,000 and 10,000 req/s.
4. TTFT/ITL accuracy against the ground-truth stream server at 1, 16 and 64 streams (ours vs httpx).
5. The event loop: asyncio's against uvloop's, one process (the engine uses uvloop when installed).
6. Worker processes: 1 and N (N = cores) sharing one closed-loop load, against one process.
7. Memory per request record and the time to summarise 1M records.
8. Peer clients installed from PyPI into a side virtualenv (Locust; GuideLLM and AIPerf where they run),
   against the same nginx in the same run (``--peers``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pytest_ubench.load import parallel
from pytest_ubench.load.dataset import Prompt
from pytest_ubench.load.engine import LoadPlan, run
from pytest_ubench.load.http import build_request
from pytest_ubench.load.routing import Target
from pytest_ubench.metrics import client_check
from pytest_ubench.metrics.stats import summary
from pytest_ubench.orchestrators.ports import free_port
from pytest_ubench.protocols.openai import request_body

BODY = json.dumps({"choices": [{"index": 0, "message": {"content": "x"}}], "usage": {"completion_tokens": 1}})
EVENT = 'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n'
N_EVENTS = 2000


def ensure_tools() -> None:
    missing = [t for t in ("nginx", "wrk") if not shutil.which(t) and not Path(f"/usr/sbin/{t}").exists()]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True)
    elif missing:
        sys.exit(f"missing {missing}: apt-get install {' '.join(missing)}")


def start_nginx(tmp: Path, port: int, pin: bool = True, access_log: Path | None = None) -> subprocess.Popen[bytes]:
    """nginx serving a fixed chat reply and an event stream; ``access_log``: a line (the status) per request."""
    sse = tmp / "stream.txt"
    last = 'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}\n\ndata: [DONE]\n\n'
    sse.write_text(EVENT * N_EVENTS + last)
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
daemon off; worker_processes {1 if pin else "auto"}; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
  log_format bare '$status'; access_log {f"{access_log} bare" if access_log else "off"};
  keepalive_requests 1000000; keepalive_timeout 60;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp};
  scgi_temp_path {tmp};
  server {{
    listen 127.0.0.1:{port};
    location = /v1/chat/completions {{ default_type application/json; return 200 '{BODY}'; }}
    location = /stream {{ alias {sse}; default_type text/event-stream; }}
  }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = subprocess.Popen([*(["taskset", "-c", "1"] if pin else []), nginx, "-c", str(conf), "-p", str(tmp)])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nginx did not start")


def wrk(url: str, seconds: int, conns: int = 64, threads: int = 1, pin: bool = True) -> tuple[float, float]:
    out = subprocess.run(
        [*(["taskset", "-c", "0"] if pin else []), "wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[m.group(2)]
    return rps, float(m.group(1)) * scale


def pinned(code: str, seconds: int, env: dict[str, str] | None = None) -> dict:
    """Run a client snippet in its own process pinned to core 0; it prints one JSON line."""
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code, str(seconds)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


OURS = """
import json, sys
from pytest_ubench.load.engine import LoadPlan, run
from pytest_ubench.load.routing import Target
from pytest_ubench.load.http import build_request
port, path, method, stream, conns, secs = {port}, {path!r}, {method!r}, {stream}, {conns}, float(sys.argv[1])
req = build_request(method, "127.0.0.1", port, path, b"{{}}" if method == "POST" else b"", {{}})
r = run(Target("127.0.0.1", port), LoadPlan([req], stream, "closed", concurrency=conns, duration_s=secs))
ok = [x for x in r.records if x.ok]
print(json.dumps({{"ok": len(ok), "failed": len(r.records) - len(ok), "chunks": sum(len(x.chunks) for x in ok),
                  "secs": max(x.end for x in r.records) - r.t0}}))
"""

HTTPX = """
import asyncio, json, sys, time, httpx
async def main(secs):
    n = 0
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as c:
        t0 = time.perf_counter(); stop = t0 + secs
        async def user():
            nonlocal n
            while time.perf_counter() < stop:
                r = await c.post("http://127.0.0.1:{port}/v1/chat/completions", content=b"{{}}"); r.read(); n += 1
        await asyncio.gather(*(user() for _ in range(64)))
        print(json.dumps({{"ok": n, "secs": time.perf_counter() - t0}}))
asyncio.run(main(float(sys.argv[1])))
"""

AIOHTTP = """
import asyncio, json, sys, time, aiohttp
async def main(secs):
    n = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
        t0 = time.perf_counter(); stop = t0 + secs
        async def user():
            nonlocal n
            while time.perf_counter() < stop:
                async with s.post("http://127.0.0.1:{port}/v1/chat/completions", data=b"{{}}") as r:
                    await r.read(); n += 1
        await asyncio.gather(*(user() for _ in range(64)))
        print(json.dumps({{"ok": n, "secs": time.perf_counter() - t0}}))
asyncio.run(main(float(sys.argv[1])))
"""


def non_streaming(port: int, secs: int) -> None:
    print("\n## 1. Non-streaming requests/s, one process on one core, 64 connections, nginx on the other core")
    ref, _ = wrk(f"http://127.0.0.1:{port}/v1/chat/completions", secs)
    print(f"{'wrk -t1 -c64 (reference)':34} {ref:>10,.0f} req/s")
    for name, code in (
        (
            "pytest-ubench (asyncio + httptools)",
            OURS.format(port=port, path="/v1/chat/completions", method="POST", stream=False, conns=64),
        ),
        ("httpx 0.28 AsyncClient", HTTPX.format(port=port)),
        ("aiohttp ClientSession", AIOHTTP.format(port=port)),
    ):
        try:
            r = pinned(code, secs)
        except (subprocess.CalledProcessError, ModuleNotFoundError) as exc:
            print(f"{name:34} failed: {exc}")
            continue
        rps = r["ok"] / r["secs"]
        print(f"{name:34} {rps:>10,.0f} req/s   {rps / ref:6.1%} of wrk   failed {r.get('failed', 0)}")


def sse_events(port: int, secs: int) -> None:
    print(f"\n## 2. SSE events parsed per second ({N_EVENTS} events per response, 4 connections)")
    _, bps = wrk(f"http://127.0.0.1:{port}/stream", secs, conns=4)
    ref = bps / len(EVENT)
    print(f"{'wrk bytes/s as events (reference)':34} {ref:>10,.0f} events/s (wrk does not parse)")
    r = pinned(OURS.format(port=port, path="/stream", method="GET", stream=True, conns=4), secs)
    eps = r["chunks"] / r["secs"]
    print(f"{'pytest-ubench StreamSink':34} {eps:>10,.0f} events/s   {eps / ref:6.1%} of wrk   failed {r['failed']}")


def send_lag(port: int, secs: int) -> None:
    print("\n## 3. Open-loop send lag (Poisson), non-streaming, against nginx; target p99 <= 1 ms")
    req = build_request("POST", "127.0.0.1", port, "/v1/chat/completions", b"{}", {})
    for rate, workers in ((2000, 1), (10000, 1), (10000, os.cpu_count() or 1)):
        plan = LoadPlan([req], False, "open", rate=rate, duration_s=secs)
        r = parallel.run(Target("127.0.0.1", port), plan, workers)
        s = summary(r.measured, r.window_start, r.window_end)
        lag = s["metrics"]["send_lag_ms"]
        check = client_check.check(r.client, r.records, "open", r.window_start, r.window_end)
        print(
            f"{rate:>6,} req/s  {workers} process(es)  sent {lag['count']:,}  send_lag_ms p50 {lag['p50']:.3f}  "
            f"p99 {lag['p99']:.3f}  max {lag['max']:.3f}  achieved {s['throughput']['requests_per_s']:,.0f} req/s  "
            f"self-check: {'BOTTLENECK ' + '; '.join(check['reasons']) if check['bottleneck'] else 'kept up'}"
        )


def event_loops(port: int, secs: int) -> None:
    print("\n## 5. Event loop, one process pinned to one core, 64 connections, non-streaming")
    code = OURS.format(port=port, path="/v1/chat/completions", method="POST", stream=False, conns=64)
    got = {}
    for name, env in (("asyncio", {"UBENCHAI_LOOP": "asyncio"}), ("uvloop", {})):
        r = pinned(code, secs, env)
        got[name] = r["ok"] / r["secs"]
        print(f"{name:10} {got[name]:>10,.0f} req/s")
    print(f"uvloop / asyncio: {got['uvloop'] / got['asyncio']:.2f}x")


def workers_scaling(port: int, secs: int) -> None:
    n = os.cpu_count() or 1
    print(f"\n## 6. Worker processes (closed loop, 128 connections, non-streaming); nginx shares the {n} cores")
    ref, _ = wrk(f"http://127.0.0.1:{port}/v1/chat/completions", secs, conns=128, threads=n, pin=False)
    print(f"{'wrk -t' + str(n) + ' -c128 (reference)':30} {ref:>10,.0f} req/s")
    req = build_request("POST", "127.0.0.1", port, "/v1/chat/completions", b"{}", {})
    base = None
    for workers in sorted({1, n}):
        r = parallel.run(
            Target("127.0.0.1", port), LoadPlan([req], False, "closed", concurrency=128, duration_s=secs), workers
        )
        rps = summary(r.measured, r.window_start, r.window_end)["throughput"]["requests_per_s"]
        base = base or rps
        scale = f"{rps / base:4.2f}x one process"
        print(f"{workers} process(es){'':17} {rps:>10,.0f} req/s   {scale}   {rps / ref:6.1%} of wrk")


def records_cost() -> None:
    print("\n## 7. Request records: memory each as kept (target <= 100 B, + 4 B per chunk), and summarising 1M")
    import gc
    import tracemalloc

    from pytest_ubench.metrics.columns import BLOCK, Collector
    from pytest_ubench.metrics.records import Record

    def one(i: int, chunks: int) -> Record:
        rec = Record(i * 1e-3)
        rec.start, rec.end, rec.status, rec.output_tokens, rec.tokens_from = (
            i * 1e-3,
            i * 1e-3 + 0.01,
            200,
            chunks or 1,
            "usage",
        )
        rec.chunks = [i * 1e-3 + 0.001 * k for k in range(chunks)]
        rec.first = rec.chunks[0] if chunks else rec.first
        return rec

    def kept(n: int, chunks: int) -> Collector:
        c = Collector(0.0)
        for i in range(n):
            c.add(one(i, chunks))  # the engine's way: each request into the columns as it finishes
        return c

    def traced(n: int, chunks: int) -> int:
        gc.collect()
        tracemalloc.start()
        c = kept(n, chunks)
        size, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del c
        return size

    # The marginal cost (between n and 2n requests): the collector's one block of working space is a
    # constant, not a cost per request; with blocks spilled to disk (every run with a results directory)
    # memory is that constant alone.
    for chunks in (0, 1, 256):
        n = 5 * BLOCK  # whole blocks: the one being filled is the same at n and 2n
        small, large = traced(n, chunks), traced(2 * n, chunks)
        print(f"request with {chunks:3d} chunk(s): {(large - small) / n:8.1f} bytes each in memory "
              f"(working space {(2 * small - large) / 1e6:.1f} MB)")  # fmt: skip
    recs = kept(1_000_000, 1).finish()
    t = time.perf_counter()
    summary(recs, 0.0, 1000.0)
    print(f"summarise 1,000,000 records: {time.perf_counter() - t:5.2f} s")


LOCUSTFILE = """
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser
class U(FastHttpUser):
    wait_time = constant(0)
    @task
    def post(self):
        self.client.post("/v1/chat/completions", data=b"{}")
"""


def peers(port: int, secs: int, tmp: Path) -> None:
    print("\n## 8. Peer clients from PyPI, one process on one core, 64 users, non-streaming, against nginx")
    venv = tmp / "peers"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([venv / "bin" / "pip", "install", "-q", "locust"], capture_output=True, text=True)
    if pip.returncode:
        print(f"locust: could not install: {pip.stderr.strip().splitlines()[-1:]}")
        return
    ours = pinned(OURS.format(port=port, path="/v1/chat/completions", method="POST", stream=False, conns=64), secs)
    ours_rps = ours["ok"] / ours["secs"]
    (tmp / "locustfile.py").write_text(LOCUSTFILE)
    out = subprocess.run(
        ["taskset", "-c", "0", venv / "bin" / "locust", "-f", tmp / "locustfile.py", "--headless", "-u", "64",
         "-r", "64", "-t", f"{secs}s", "--host", f"http://127.0.0.1:{port}", "--only-summary", "--csv", tmp / "loc"],
        capture_output=True, text=True,
    )  # fmt: skip
    rows = (tmp / "loc_stats.csv").read_text().splitlines() if (tmp / "loc_stats.csv").exists() else []
    agg = next((r.split(",") for r in rows if ",Aggregated," in r), None)
    if agg is None:
        print(f"locust: no result ({out.stderr.strip().splitlines()[-1:]})")
        return
    header = rows[0].split(",")
    rps = float(agg[header.index("Requests/s")])
    print(f"{'pytest-ubench':30} {ours_rps:>10,.0f} req/s")
    print(f"{'locust FastHttpUser':30} {rps:>10,.0f} req/s   ours / locust: {ours_rps / rps:.1f}x")


HTTPX_STREAM = """
import asyncio, json, sys, time, httpx
async def main(secs, conc, port):
    ttft = []; itl = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=conc), timeout=60) as c:
        stop = time.perf_counter() + secs
        async def user():
            while time.perf_counter() < stop:
                t0 = time.perf_counter(); last = None
                async with c.stream("POST", f"http://127.0.0.1:{{port}}/v1/chat/completions",
                                    json={{"stream": True, "max_tokens": 32}}) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data:") and "content" in line:
                            now = time.perf_counter()
                            if last is None: ttft.append((now - t0) * 1000)
                            else: itl.append((now - last) * 1000)
                            last = now
        await asyncio.gather(*(user() for _ in range(conc)))
    print(json.dumps({{"ttft": sorted(ttft)[len(ttft) // 2], "itl": sorted(itl)[len(itl) // 2], "n": len(ttft)}}))
asyncio.run(main(float(sys.argv[1]), {conc}, {port}))
"""


def accuracy(secs: int) -> None:
    print("\n## 4. Accuracy against the ground-truth stream server (TTFT 40 ms, ITL 8 ms, 32 tokens, closed loop)")
    port = free_port("127.0.0.1")
    srv = subprocess.Popen(
        [sys.executable, "-m", "pytest_ubench.testing.truthserver", "--port", str(port)], stdout=subprocess.PIPE
    )
    srv.stdout.readline()
    base = f"http://127.0.0.1:{port}"
    try:
        for conc in (1, 16, 64):
            for name in ("pytest-ubench", "httpx"):
                urllib.request.urlopen(urllib.request.Request(base + "/truth/reset", data=b"")).read()
                if name == "pytest-ubench":
                    body = request_body("openai-chat", "m", Prompt("hi"), 32, True, {})
                    req = build_request("POST", "127.0.0.1", port, "/v1/chat/completions", body, {})
                    r = run(
                        Target("127.0.0.1", port), LoadPlan([req], True, "closed", concurrency=conc, duration_s=secs)
                    )
                    m = summary(r.measured, r.window_start, r.window_end)
                    got = {
                        "ttft": m["metrics"]["ttft_ms"]["p50"],
                        "itl": m["metrics"]["itl_ms"]["p50"],
                        "n": m["requests"]["ok"],
                    }
                else:
                    got = json.loads(
                        subprocess.run(
                            [sys.executable, "-c", HTTPX_STREAM.format(conc=conc, port=port), str(secs)],
                            capture_output=True,
                            text=True,
                            check=True,
                        ).stdout
                    )
                truth = json.load(urllib.request.urlopen(base + "/truth"))
                t_ttft = statistics.median((x["writes"][0] - x["received"]) * 1000 for x in truth)
                t_itl = (
                    statistics.median(b - a for x in truth for a, b in zip(x["writes"], x["writes"][1:], strict=False))
                    * 1000
                )
                print(
                    f"{conc:3} streams  {name:14} TTFT p50 {got['ttft']:7.2f} ms (truth {t_ttft:6.2f}, "
                    f"{got['ttft'] - t_ttft:+6.2f})  ITL p50 {got['itl']:6.3f} (truth {t_itl:6.3f}, "
                    f"{got['itl'] - t_itl:+6.3f})  requests {got['n']}"
                )
    finally:
        srv.terminate()
        srv.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--peers", action="store_true", help="also install and measure peer clients (Locust)")
    args = ap.parse_args()
    ensure_tools()
    print(f"# client perf  {time.strftime('%Y-%m-%d %H:%M')}  cores={os.cpu_count()}  python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port("127.0.0.1")
        nginx = start_nginx(Path(tmp), port)
        try:
            non_streaming(port, args.seconds)
            sse_events(port, args.seconds)
            send_lag(port, args.seconds)
            event_loops(port, args.seconds)
            nginx.terminate()
            nginx.wait()
            nginx = start_nginx(Path(tmp), port, pin=False)
            workers_scaling(port, args.seconds)
            if args.peers:
                nginx.terminate()
                nginx.wait()
                nginx = start_nginx(Path(tmp), port)
                peers(port, args.seconds, Path(tmp))
        finally:
            nginx.terminate()
            nginx.wait()
    accuracy(args.seconds)
    records_cost()


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
