"""MLServer (Seldon's Open Inference Protocol server, the one KServe runs for Python models) with a
model of ours, for the kserve-v2 protocol's recipe and tests: a real v2 server that installs from PyPI.

    python -m pytest_ubench.servers.mlserver --data DIR --port 8080 [--host 127.0.0.1] [--delay-ms 0]
        [--model-name sum]

It writes MLServer's settings (its gRPC and metrics ports on free ports, no worker pool) and a model
repository with one model (``pytest_ubench.testing.v2model.SumModel``, named ``sum`` unless said) under
DIR, then runs ``mlserver start``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from ..orchestrators.ports import free_port


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--model-name", default="sum", help="the name the model answers to")
    args = p.parse_args(argv)
    exe = shutil.which("mlserver", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe is None:
        sys.exit("mlserver is not installed: pip install mlserver")
    model = args.data / "models" / args.model_name
    model.mkdir(parents=True, exist_ok=True)
    settings = {"host": args.host, "http_port": args.port, "grpc_port": free_port(args.host),
                "metrics_port": free_port(args.host), "parallel_workers": 0, "debug": False}  # fmt: skip
    (args.data / "settings.json").write_text(json.dumps(settings))
    (model / "model-settings.json").write_text(json.dumps({
        "name": args.model_name, "implementation": "pytest_ubench.testing.v2model.SumModel",
        "parameters": {"version": "1", "extra": {"delay_ms": args.delay_ms}},
    }))  # fmt: skip
    os.execv(exe, [exe, "start", str(args.data)])


if __name__ == "__main__":
    main()
