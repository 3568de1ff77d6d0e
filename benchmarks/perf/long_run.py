"""Long runs: the client's memory over a soak, and what ten million records cost. Not a test: prints figures.

    .venv/bin/python benchmarks/perf/long_run.py soak [--minutes 30] [--rate 2000]
    .venv/bin/python benchmarks/perf/long_run.py records [--n 10000000]

soak: one client process, open loop at --rate against nginx (one worker pinned to core 1, its access log
on) for --minutes, records spilled to disk and a checkpoint each minute, as a long run does. Prints the
client's RSS each minute and the last minute's against the first (the reference, same run), then the
client's request count against nginx's access log.

records: a results directory from a one-second run against the truth server, whose records are replaced
by --n synthetic non-streamed requests (2,000 req/s arrivals, lognormal latencies); then the time to read
them and compute the figures, the time to render the standalone report, and the Parquet bytes per request.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from client_perf import start_nginx  # this folder's: nginx with a fixed chat reply

from pytest_ubench.load.engine import LoadPlan, run
from pytest_ubench.load.http import build_request
from pytest_ubench.load.routing import Target
from pytest_ubench.metrics import stats
from pytest_ubench.metrics.columns import ROW, Records
from pytest_ubench.metrics.live import Live
from pytest_ubench.metrics.record_files import PARQUET, read_case, write_parquet
from pytest_ubench.orchestrators.ports import free_port
from pytest_ubench.report import standalone


def soak(minutes: float, rate: float) -> None:
    print(f"## soak: {minutes:g} min at {rate:g} req/s, one client process, against nginx (one worker)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        port = free_port("127.0.0.1")
        nginx = start_nginx(tmp, port, access_log=tmp / "access.log")
        me = psutil.Process()
        rss: list[float] = []
        stop = threading.Event()

        def sample() -> None:  # RSS once a minute, from a thread beside the load
            while not stop.wait(60.0):
                rss.append(me.memory_info().rss / 1e6)
                print(f"  minute {len(rss):3d}: RSS {rss[-1]:7.1f} MB", flush=True)

        def checkpoint(live: Live, at: float) -> None:
            f = live.figures(at)
            print(f"  checkpoint {at:6.0f} s: {f['requests']['ok']:,} ok, {f['requests']['failed']} failed, "
                  f"E2E p99 {f['metrics']['e2e_ms']['p99']} ms", flush=True)  # fmt: skip

        req = build_request("POST", "127.0.0.1", port, "/v1/chat/completions", b'{"messages":[]}', {})
        plan = LoadPlan(
            [req], False, "open", rate=rate, duration_s=minutes * 60, seed=1, request_timeout_s=10.0,
            checkpoint_s=60.0, spill_dir=tmp / "records.parts",
        )  # fmt: skip
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            r = run(Target("127.0.0.1", port), plan, checkpoint=checkpoint)
        finally:
            stop.set()
            nginx.terminate()
            nginx.wait()
        served = sum(1 for _ in (tmp / "access.log").open())
        sent = int(np.count_nonzero(~np.isnan(r.records["start"])))
        s = stats.summary(r.measured, r.window_start, r.window_end)
        print(f"client: {len(r.records):,} records, {sent:,} sent, {s['requests']['ok']:,} ok, "
              f"{s['requests']['failed']} failed, {s['requests']['dropped']} dropped; "
              f"{s['throughput']['requests_per_s']:,.1f} req/s")  # fmt: skip
        print(f"nginx access log: {served:,} requests; client sent - nginx served = {sent - served}")
        if len(rss) >= 2:
            print(f"RSS minute {len(rss)} / minute 1: {rss[-1]:.1f} / {rss[0]:.1f} MB = {rss[-1] / rss[0]:.3f}")


def synthetic(n: int, seed: int = 0) -> Records:
    """n non-streamed requests at 2,000 req/s: what a long soak leaves."""
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, ROW)
    intended = np.cumsum(rng.exponential(1 / 2000, n))
    lag = rng.exponential(0.0002, n)
    e2e = rng.lognormal(np.log(0.004), 0.5, n)
    rows["intended"] = np.rint(intended * 1e6) / 1e6
    rows["start"] = np.rint((intended + lag) * 1e6) / 1e6
    rows["end"] = np.rint((intended + lag + e2e) * 1e6) / 1e6
    rows["first"] = rows["end"]
    rows["status"], rows["nbytes"], rows["output_tokens"], rows["prompt_tokens"] = 200, 612, 16, 24
    rows["tokens_from"] = 1
    rows["recall"] = rows["server_decode_s"] = np.nan
    rows["warmup"] = intended < 10.0
    names = {"error": [None], "op": [""], "tokens_from": ["", "usage"]}
    return Records(rows, np.empty(0, np.uint32), np.empty(0, np.int32), names)


def records(n: int) -> None:
    print(f"## {n:,} records: figures, standalone report, Parquet size")
    with tempfile.TemporaryDirectory() as tmp_name:
        out = Path(tmp_name) / "out"
        recipe = Path(tmp_name) / "tiny.yaml"
        recipe.write_text(json.dumps({
            "name": "tiny",
            "service": {"command": ["{python}", "-m", "pytest_ubench.testing.truthserver", "--port", "{port}"]},
            "workload": {"protocol": "openai-chat", "model": "m", "stream": False, "duration_s": 1.0,
                         "dataset": {"prompt_tokens": 8, "output_tokens": 4, "prompts": 4},
                         "load": {"mode": "closed", "concurrency": 2}},
        }))  # fmt: skip
        cmd = [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(recipe), "--output", str(out)]
        subprocess.run(cmd, check=True, capture_output=True)
        (case,) = [p.parent for p in out.glob("*/results.json")]
        t = time.perf_counter()
        table = synthetic(n)
        print(f"generated in {time.perf_counter() - t:5.1f} s")
        write_parquet(case / PARQUET, table, {"case_id": case.name})
        size = (case / PARQUET).stat().st_size
        print(f"Parquet: {size / 1e6:,.1f} MB, {size / n:.1f} bytes per request")
        del table
        t = time.perf_counter()
        back = read_case(case)
        read = time.perf_counter() - t
        measured = back.measured
        t = time.perf_counter()
        stats.summary(measured, 10.0, float(measured["intended"].max()))
        figures = time.perf_counter() - t
        print(f"read {read:5.1f} s, figures (summary) {figures:5.1f} s")
        t = time.perf_counter()
        page = standalone.render(out)
        report = time.perf_counter() - t
        print(f"standalone report: {report:5.1f} s, {len(page) / 1e6:.1f} MB")
        print(f"read + figures + report: {read + figures + report:5.1f} s  (target <= 30 s)")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        print(f"peak RSS {peak:,.0f} MB  cores={os.cpu_count()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("soak")
    s.add_argument("--minutes", type=float, default=30.0)
    s.add_argument("--rate", type=float, default=2000.0)
    r = sub.add_parser("records")
    r.add_argument("--n", type=int, default=10_000_000)
    args = ap.parse_args()
    # A soak stopped with kill (SIGTERM) unwinds like Ctrl-C: its nginx is stopped, its folder removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.what == "soak":
        soak(args.minutes, args.rate)
    else:
        records(args.n)


if __name__ == "__main__":
    main()
