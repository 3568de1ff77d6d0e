"""Run llama.cpp's own OpenAI-compatible server (the ``xllamacpp`` wheel) on a generated model.

This is the embedded default target: no compiler, no download, a real continuous-batching server
with /health, /v1/chat/completions, /v1/completions, /metrics and /slots. It serves until SIGTERM.

    python -m pytest_ubench.servers.llamacpp --port 8080 --size tiny --parallel 8
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from ..testing.tinymodel import SIZES, model_path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="llama.cpp server on a generated (or given) GGUF model")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", type=Path, help="a GGUF file; default: the generated model of --size")
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated model's weights")
    ap.add_argument("--alias", default="tiny", help="model name the server answers to")
    ap.add_argument("--parallel", type=int, default=8, help="concurrent slots (continuous batching)")
    ap.add_argument("--ctx-per-slot", type=int, default=1024)
    ap.add_argument("--embedding", action="store_true", help="serve /v1/embeddings (mean pooling)")
    # One core is left for the HTTP thread and a load client on the same machine: on 2 cores with 2
    # compute threads the HTTP thread starved and whole streams arrived in one burst (measured).
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    args = ap.parse_args(argv)

    import xllamacpp  # imported late: a missing extra should fail with the message below

    path = args.model or model_path(args.size, args.seed)
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx_per_slot * args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.embedding = args.embedding
    if args.embedding:  # the generated model declares no pooling; OpenAI embeddings need one vector per input
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
        params.n_ubatch = params.n_batch  # a whole input in one micro-batch (llama.cpp's requirement)
    params.endpoint_metrics = True
    params.endpoint_slots = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = xllamacpp.Server(params)
    print(f"llama.cpp server on http://{args.host}:{args.port} model={path}", flush=True)
    stop.wait()
    del server


if __name__ == "__main__":
    main()
