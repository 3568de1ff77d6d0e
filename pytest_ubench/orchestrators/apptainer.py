"""The Apptainer runtime: the command line that runs a recipe's command inside its image.

Shared by every orchestrator, so a recipe means the same container whether it runs on a laptop or in
a batch job. The container gets ``--cleanenv``: the host's environment (tokens, credentials) does not
leak in; only the recipe's ``env`` is passed, as ``APPTAINERENV_*`` variables, so values never show
up on a command line (``ps``) either.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..recipes.deployment import Container

_REMOTE = re.compile(r"^(docker|oras|library|shub|https?)://")


def cache_dir(configured: str | None = None) -> Path:
    """Where pulled images live: the cluster profile's choice, ``UBENCHAI_IMAGE_CACHE``, or ~/.cache."""
    chosen = configured or os.environ.get("UBENCHAI_IMAGE_CACHE")
    return Path(chosen).expanduser() if chosen else Path.home() / ".cache" / "ubenchai" / "images"


def image_path(image: str, cache: Path) -> Path:
    """The ``.sif`` file the container runs from: the image itself, or its pulled copy in the cache."""
    if not _REMOTE.match(image):
        return Path(image).expanduser()
    return cache / (re.sub(r"[^A-Za-z0-9._-]+", "_", _REMOTE.sub("", image)).strip("_") + ".sif")


def needs_pull(image: str) -> bool:
    return bool(_REMOTE.match(image))


def pull_command(image: str, dest: Path) -> list[str]:
    return ["apptainer", "pull", "--force", str(dest), image]


def command(container: Container, sif: Path, gpus: int, binds: Sequence[str] = ()) -> list[str]:
    """``apptainer exec|run [--nv] --cleanenv [--bind ...] [args] IMAGE``; the recipe's command follows."""
    argv = ["apptainer", container.mode, "--cleanenv"]
    if gpus > 0:
        argv.append("--nv")
    all_binds = [*binds, *container.binds]
    if all_binds:
        argv += ["--bind", ",".join(dict.fromkeys(all_binds))]
    return [*argv, *container.args, str(sif)]


def env(values: dict[str, str]) -> dict[str, str]:
    """The recipe's environment as Apptainer passes it through ``--cleanenv``."""
    return {f"APPTAINERENV_{k}": v for k, v in values.items()}
