"""The Apptainer runtime: images pulled once on the submitting node, and the command line that runs a
recipe's command inside one.

Shared by every orchestrator, so a recipe means the same container whether it runs on a laptop or in
a batch job. The container gets ``--cleanenv``: the host's environment (tokens, credentials) does not
leak in; only the recipe's ``env`` is passed, as ``APPTAINERENV_*`` (``SINGULARITYENV_*``) variables,
so values never show up on a command line (``ps``) either.

Images are pulled where HPC users pull them: on the node that submits (a login node), before ``sbatch``,
into the cluster profile's image cache on scratch, with Apptainer's own layer cache beside it
(``APPTAINER_CACHEDIR``; ``$HOME`` has a small quota on clusters). A job then only runs the ``.sif``: no
GPU hours spent downloading, no pull racing the health timeout, no pull on compute nodes without a
network. A file lock makes concurrent runs pull an image once. Sites that still have only the
``singularity`` command get it instead of ``apptainer``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock, Timeout
from loguru import logger

from ..recipes.deployment import Container
from .base import ServiceError

_REMOTE = re.compile(r"^(docker|oras|library|shub|https?)://")
RUNTIMES = ("apptainer", "singularity")  # the first found on PATH is used
PULL_TIMEOUT_S = 3 * 3600.0  # a 10 GB image over a slow link; the lock waits as long for another run's pull


def cache_dir(configured: str | None = None) -> Path:
    """Where pulled images live: the cluster profile's choice, ``UBENCHAI_IMAGE_CACHE``, or ~/.cache."""
    chosen = configured or os.environ.get("UBENCHAI_IMAGE_CACHE")
    return Path(chosen).expanduser() if chosen else Path.home() / ".cache" / "ubenchai" / "images"


def image_path(image: str, cache: Path) -> Path:
    """The ``.sif`` file the container runs from: the image itself, or its pulled copy in the cache."""
    if not _REMOTE.match(image):
        return Path(image).expanduser()
    return cache / (re.sub(r"[^A-Za-z0-9._-]+", "_", _REMOTE.sub("", image)).strip("_") + ".sif")


def runtime() -> str:
    """``apptainer``, else ``singularity``: whichever this node has."""
    for name in RUNTIMES:
        if shutil.which(name):
            return name
    raise ServiceError("neither apptainer nor singularity is on PATH (on a cluster: load its module first)")


def env_prefix(binary: str) -> str:
    """The prefix of variables the runtime passes into a ``--cleanenv`` container."""
    return f"{Path(binary).name.upper()}ENV_"


def pull(image: str, cache: Path) -> Path:
    """The image's ``.sif``, pulled now into ``cache`` unless it is there already (or is a local file)."""
    sif = image_path(image, cache)
    if not _REMOTE.match(image):
        if not sif.is_file():
            raise ServiceError(f"image {image}: no such file")
        return sif
    if sif.is_file():
        return sif
    sif.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{sif}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for another run's pull of {} into {}", image, sif)
        try:
            lock.acquire(timeout=PULL_TIMEOUT_S)
        except Timeout:
            raise ServiceError(f"image {image}: another pull into {sif} has held its lock for too long") from None
    try:
        if not sif.is_file():
            _pull(image, sif, cache)
    finally:
        lock.release()
    return sif


def _pull(image: str, sif: Path, cache: Path) -> None:
    binary = runtime()
    layers = cache / "cache"
    env = os.environ | {f"{binary.upper()}_CACHEDIR": str(layers), "APPTAINER_CACHEDIR": str(layers)}
    tmp = sif.with_name(f"{sif.name}.{os.getpid()}.tmp")
    logger.info("pulling {} into {} with {} (once: later runs use the file)", image, sif, binary)
    try:
        done = subprocess.run(
            [binary, "pull", "--force", str(tmp), image],
            capture_output=True, text=True, env=env, timeout=PULL_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        tmp.unlink(missing_ok=True)
        raise ServiceError(f"cannot pull {image} with {binary}: {exc}") from None
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise ServiceError(f"cannot pull {image} with {binary}: {last[0]}")
    os.replace(tmp, sif)


def scratch_sources(binds: Sequence[str], scratch: str | None) -> list[str]:
    """Bind sources on scratch (a service's data directory): created before the container starts, since
    Apptainer refuses to bind a path that does not exist."""
    if not scratch:
        return []
    return [src for src in (b.split(":", 1)[0] for b in binds) if src == scratch or src.startswith(f"{scratch}/")]


def command(
    container: Container, sif: Path, gpus: int, binds: Sequence[str] = (), binary: str = "apptainer"
) -> list[str]:
    """``apptainer exec|run [--nv] --cleanenv [--bind ...] [args] IMAGE``; the recipe's command follows."""
    argv = [binary, container.mode, "--cleanenv"]
    if gpus > 0:
        argv.append("--nv")
    all_binds = [*binds, *container.binds]
    if all_binds:
        argv += ["--bind", ",".join(dict.fromkeys(all_binds))]
    return [*argv, *container.args, str(sif)]


def env(values: dict[str, str], binary: str = "apptainer") -> dict[str, str]:
    """The recipe's environment as the runtime passes it through ``--cleanenv``."""
    return {f"{env_prefix(binary)}{k}": v for k, v in values.items()}
