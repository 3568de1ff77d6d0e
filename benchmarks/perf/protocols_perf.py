"""The non-HTTP adapters next to each ecosystem's own load tool, measured in the same run (ratios).

Not a test: prints figures. Needs Debian's redis-server (with redis-benchmark) and postgresql (with pgbench):

    .venv/bin/python benchmarks/perf/protocols_perf.py [--seconds 5]

1. Redis GET, 16 connections, no pipelining: our redis adapter (redis-py asyncio; 1 and N worker
   processes) against redis-benchmark.
2. PostgreSQL TPC-B-like transactions, 8 connections, scale 1: our postgres adapter (psycopg 3 async pool)
   against pgbench on the same server and tables.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

from pytest_ubench.load import engine, parallel
from pytest_ubench.load.adapters.postgres import PostgresSQL, tpcb
from pytest_ubench.load.adapters.redis_kv import RedisKV
from pytest_ubench.metrics.stats import summary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int) -> None:
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def ours(adapter: object, conns: int, secs: float, workers: int = 1) -> tuple[float, float]:
    plan = engine.LoadPlan([], False, "closed", concurrency=conns, duration_s=secs, warmup_s=0.5, adapter=adapter)  # type: ignore[arg-type]
    r = parallel.run(engine.Target("127.0.0.1", 0), plan, workers)
    s = summary(r.measured, r.window_start, r.window_end)
    return s["throughput"]["requests_per_s"], s["metrics"]["e2e_ms"]["p50"]


def redis(secs: float) -> None:
    print("\n## 1. Redis GET, 16 connections, 10,000 keys of 128 bytes, no pipelining")
    port = free_port()
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                           stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_port(port)
        out = subprocess.run(
            ["redis-benchmark", "-p", str(port), "-c", "16", "-n", str(int(60000 * secs)), "-t", "get", "-d", "128",
             "-r", "10000", "--csv"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        ref = float(re.search(r'"GET","([\d.]+)"', out).group(1))
        print(f"{'redis-benchmark (reference)':32} {ref:>10,.0f} ops/s")
        spec = RedisKV("127.0.0.1", port, keys=10000, value_bytes=128, get_share=1.0)
        for workers in sorted({1, os.cpu_count() or 1}):
            rps, p50 = ours(spec, 16, secs, workers)
            label = f"pytest-ubench, {workers} process(es)"
            print(f"{label:32} {rps:>10,.0f} ops/s   {rps / ref:6.1%}   p50 {p50:.2f} ms")
    finally:
        srv.terminate()
        srv.wait()


def postgres(secs: float) -> None:
    print("\n## 2. PostgreSQL TPC-B-like (pgbench's default transaction), 8 connections, scale 1")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        srv = subprocess.Popen([sys.executable, "-m", "pytest_ubench.servers.postgres", "--data", f"{tmp}/pgdata",
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_port(port)
            setup, statements = tpcb(1)
            spec = PostgresSQL("127.0.0.1", port, tuple(statements), tuple(setup))
            ours(spec, 1, 1.0)  # creates and fills pgbench's tables
            pgbench = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))[-1]
            out = subprocess.run(
                [pgbench, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "8", "-j", "1", "-T",
                 str(int(secs)), "-n", "postgres"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            ref = float(re.search(r"tps = ([\d.]+)", out).group(1))
            print(f"{'pgbench -c8 -j1 (reference)':32} {ref:>10,.0f} TPS")
            for workers in sorted({1, os.cpu_count() or 1}):
                tps, p50 = ours(spec, 8, secs, workers)
                label = f"pytest-ubench, {workers} process(es)"
                print(f"{label:32} {tps:>10,.0f} TPS   {tps / ref:6.1%}   p50 {p50:.2f} ms")
        finally:
            srv.terminate()
            srv.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args()
    print(f"# protocol adapters  {time.strftime('%Y-%m-%d %H:%M')}  cores={os.cpu_count()}")
    redis(args.seconds)
    postgres(args.seconds)


if __name__ == "__main__":
    main()
