"""What the key-checking front (``service.key_front``) adds to what the client measures: the ground-truth
server reached directly and through the front, alternated in the same run (the direct runs are the
reference). Not a test: prints figures.

    .venv/bin/python benchmarks/perf/key_front.py [--repeat 3] [--seconds 4] [--concurrency 16]

Each run is ``ubenchai client run`` against the server's URL (closed loop, streamed chat, 32 tokens at
5 ms to the first and 1 ms between) or the front's, with the key sent from the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pytest_ubench.orchestrators.ports import free_port

KEY = "perf-key"


def _up(port: int) -> None:
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def run(url: str, root: Path, name: str, seconds: float, concurrency: int) -> dict[str, float]:
    recipe = {"name": name, "service": {"url": url},
              "workload": {"protocol": "openai-chat", "model": "m", "api_key_env": "PERF_FRONT_KEY",
                           "dataset": {"prompt_tokens": 16, "output_tokens": 32, "prompts": 16},
                           "load": {"mode": "closed", "concurrency": concurrency}, "duration_s": seconds,
                           "warmup_s": 1.0}}  # fmt: skip
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = root / name
    done = subprocess.run([sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(path),
                           "--output", str(out)], env=os.environ | {"PERF_FRONT_KEY": KEY},
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode not in (0, 1):
        raise SystemExit(done.stderr[-2000:])
    (result,) = [json.loads(p.read_text()) for p in out.glob("*/results.json")]
    if result["requests"]["errors"]:
        raise SystemExit(f"{name}: errors {result['requests']['errors']}")
    return {
        "ttft_mean": result["metrics"]["ttft_ms"]["mean"],
        "ttft_p99": result["metrics"]["ttft_ms"]["p99"],
        "e2e_mean": result["metrics"]["e2e_ms"]["mean"],
        "rps": result["throughput"]["requests_per_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ubench-front-") as tmp:
        root = Path(tmp)
        (root / "k").write_text(KEY)
        server, front = free_port("127.0.0.1"), free_port("127.0.0.1")
        procs = [
            subprocess.Popen([sys.executable, "-m", "pytest_ubench.testing.truthserver", "--port", str(server),
                              "--ttft-ms", "5", "--itl-ms", "1"]),
            subprocess.Popen([sys.executable, "-m", "pytest_ubench.orchestrators.key_front", "--listen",
                              f"127.0.0.1:{front}", "--to", f"127.0.0.1:{server}", "--key-file", str(root / "k")]),
        ]  # fmt: skip
        try:
            _up(server)
            _up(front)
            figures: dict[str, list[dict[str, float]]] = {"direct": [], "front": []}
            for i in range(args.repeat):
                for kind, port in (("direct", server), ("front", front)):
                    figures[kind].append(run(f"http://127.0.0.1:{port}", root, f"{kind}{i}", args.seconds,
                                             args.concurrency))  # fmt: skip
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
    for field in ("ttft_mean", "ttft_p99", "e2e_mean", "rps"):
        direct = [f[field] for f in figures["direct"]]
        front_ = [f[field] for f in figures["front"]]
        ratio = statistics.median(front_) / statistics.median(direct)
        shown = " ".join(f"{v:8.2f}" for v in direct), " ".join(f"{v:8.2f}" for v in front_)
        print(f"{field:10s} direct {shown[0]}   front {shown[1]}   median ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
