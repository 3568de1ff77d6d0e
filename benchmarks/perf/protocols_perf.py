"""The non-HTTP adapters next to each ecosystem's own load tool, measured in the same run (ratios).

Not a test: prints figures. Needs Debian's redis-server (with redis-benchmark) and postgresql (with pgbench):

    .venv/bin/python benchmarks/perf/protocols_perf.py [--seconds 5]

1. Redis GET, 16 connections, no pipelining: our redis adapter (RESP on asyncio + hiredis; 1 and N worker
   processes) against redis-benchmark.
2. PostgreSQL TPC-B-like transactions, 8 connections, scale 1: our postgres adapter (psycopg 3 async pool)
   against pgbench on the same server and tables.
3. gRPC unary calls, 16 in flight, against the grpcio test service: our grpc adapter against a plain
   grpc.aio loop sending the same bytes over one channel (no tool for gRPC installs here: ghz does not).
4. Chroma top-10 queries, 4 in flight, against `chroma run`: our vector adapter against chromadb's own
   client on 4 threads; recall@10 beside.
5. The exact answers recall is scored against (200,000 x 128-d, 300 queries): our float32 pass with a
   float64 re-rank against plain float64 brute force, and whether they agree.
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

from pytest_ubench.load import engine, parallel, routing
from pytest_ubench.metrics.stats import summary
from pytest_ubench.orchestrators.ports import free_port
from pytest_ubench.protocols.grpc import GrpcCall
from pytest_ubench.protocols.postgres import PostgresSQL, tpcb
from pytest_ubench.protocols.redis import RedisKV
from pytest_ubench.protocols.vector import VectorSearch, vectors


def wait_port(port: int) -> None:
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def ours(adapter: object, conns: int, secs: float, workers: int = 1) -> tuple[float, float]:
    rps, p50, _ = ours_full(adapter, conns, secs, workers)
    return rps, p50


def ours_full(adapter: object, conns: int, secs: float, workers: int = 1) -> tuple[float, float, dict]:
    plan = engine.LoadPlan([], False, "closed", concurrency=conns, duration_s=secs, warmup_s=0.5, adapter=adapter)  # type: ignore[arg-type]
    r = parallel.run(routing.Target("127.0.0.1", 0), plan, workers)
    s = summary(r.measured, r.window_start, r.window_end)
    return s["throughput"]["requests_per_s"], s["metrics"]["e2e_ms"]["p50"], s


def redis(secs: float) -> None:
    print("\n## 1. Redis GET, 16 connections, 10,000 keys of 128 bytes, no pipelining")
    port = free_port("127.0.0.1")
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
    port = free_port("127.0.0.1")
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


def grpc_unary(secs: float) -> None:
    import asyncio

    import grpc

    print("\n## 3. gRPC unary Say (no delay), 16 in flight, grpcio test service")
    port = free_port("127.0.0.1")
    srv = subprocess.Popen([sys.executable, "-m", "pytest_ubench.testing.grpcserver", "--port", str(port)],
                           stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_port(port)
        spec = GrpcCall(f"127.0.0.1:{port}", "ubench.test.Echo", "Say", '{"text": "hi"}')
        request = bytes.fromhex("0a026869")  # SayRequest{text: "hi"}, as the adapter serialises it

        async def plain() -> float:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                call = ch.unary_unary("/ubench.test.Echo/Say")
                done = 0
                stop = time.perf_counter() + secs

                async def user() -> None:
                    nonlocal done
                    while time.perf_counter() < stop:
                        await call(request)
                        done += 1

                start = time.perf_counter()
                await asyncio.gather(*(user() for _ in range(16)))
                return done / (time.perf_counter() - start)

        ref = asyncio.run(plain())
        print(f"{'plain grpc.aio loop (reference)':32} {ref:>10,.0f} calls/s")
        rps, p50 = ours(spec, 16, secs)
        print(f"{'pytest-ubench, 1 process':32} {rps:>10,.0f} calls/s   {rps / ref:6.1%}   p50 {p50:.2f} ms")
    finally:
        srv.terminate()
        srv.wait()


def chroma(secs: float) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import chromadb

    print("\n## 4. Chroma top-10 queries, 20,000 x 64-d vectors, HNSW defaults, 4 in flight")
    port = free_port("127.0.0.1")
    with tempfile.TemporaryDirectory() as tmp:
        srv = subprocess.Popen([sys.executable, "-c", "from chromadb.cli.cli import app; app()", "run", "--path", tmp,
                                "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_port(port)
            spec = VectorSearch("chroma", f"http://127.0.0.1:{port}", "perf", dim=64, count=20000, queries=500)
            phases = spec.prepare()
            print(f"{'insert (our prepare phase)':32} {phases['insert']['vectors_per_s']:>10,.0f} vectors/s")
            _, queries, _ = vectors(spec)
            col = chromadb.HttpClient(host="127.0.0.1", port=port).get_collection("perf")
            stop = time.perf_counter() + secs

            def user(k: int) -> int:
                n = 0
                while time.perf_counter() < stop:
                    col.query(query_embeddings=queries[(k + 4 * n) % len(queries)][None, :], n_results=10, include=[])
                    n += 1
                return n

            start = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                ref = sum(pool.map(user, range(4))) / (time.perf_counter() - start)
            print(f"{'chromadb client, 4 threads (ref)':32} {ref:>10,.0f} queries/s")
            rps, p50, s = ours_full(spec, 4, secs)
            print(f"{'pytest-ubench, 1 process':32} {rps:>10,.0f} queries/s   {rps / ref:6.1%}   p50 {p50:.2f} ms   "
                  f"recall@10 {s['recall']['mean']:.3f}")  # fmt: skip
        finally:
            srv.terminate()
            srv.wait()


def truth(_: float) -> None:
    import numpy as np

    from pytest_ubench.protocols.vector import exact_top_k

    print("\n## 5. Exact top-10 for recall: 200,000 x 128-d stored vectors, 300 queries")
    spec = VectorSearch("chroma", "-", dim=128, count=200_000, queries=300, clusters=64)
    base, queries, _ = vectors(spec)
    start = time.perf_counter()
    b64 = base.astype(np.float64)
    norms = (b64**2).sum(axis=1)
    plain = [np.argsort(norms - 2.0 * (b64 @ q))[:10] for q in queries.astype(np.float64)]
    ref = time.perf_counter() - start
    start = time.perf_counter()
    ours_ = exact_top_k(base, queries, 10, "l2")
    t = time.perf_counter() - start
    same = all(set(a.tolist()) == set(b.tolist()) for a, b in zip(plain, ours_, strict=True))
    print(f"{'plain float64 (reference)':32} {ref:>10.1f} s")
    print(f"{'pytest-ubench float32 + re-rank':32} {t:>10.1f} s   {ref / t:5.1f}x faster   same answers: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5)
    args = ap.parse_args()
    print(f"# protocol adapters  {time.strftime('%Y-%m-%d %H:%M')}  cores={os.cpu_count()}")
    redis(args.seconds)
    postgres(args.seconds)
    grpc_unary(args.seconds)
    chroma(args.seconds)
    truth(args.seconds)


if __name__ == "__main__":
    main()
