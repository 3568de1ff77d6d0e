"""Logging setup for the CLI and the plugin (the library itself stays quiet until enabled).

Levels: ``-v`` gives DEBUG, else ``UBENCHAI_LOG_LEVEL`` (default INFO). A rotating file under
``logs/`` keeps DEBUG detail for post-mortems regardless of the console level.

The CLI owns its process and replaces loguru's default sink with its own. The plugin is a guest in
someone's pytest run: it adds a sink for ubench's messages only, and ``release`` takes away exactly that
(a sink the user added in conftest.py stays, and keeps receiving what it asked for).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

FORMAT = "{time:YYYY-MM-DD HH:mm:ss} | {level: <8} | {name}:{function} - {message}"


@dataclass(frozen=True)
class Sinks:
    """The sinks one ``configure`` added: what ``release`` removes."""

    ids: tuple[int, ...]


def configure(verbose: bool = False, log_dir: Path | None = None, guest: bool = False) -> Sinks:
    level = "DEBUG" if verbose else os.environ.get("UBENCHAI_LOG_LEVEL", "INFO").upper()
    ids = []
    if not guest:
        logger.remove()
        ids.append(logger.add(sys.stderr, level=level, format=FORMAT, colorize=None))
    logger.enable("pytest_ubench")
    directory = log_dir or Path(os.environ.get("UBENCHAI_LOG_DIR", "logs"))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        ids.append(logger.add(directory / "ubenchai.log", level="DEBUG", format=FORMAT, rotation="10 MB",
                              retention=5, enqueue=False, filter="pytest_ubench"))  # fmt: skip
    except OSError as exc:  # a read-only or full disk must not stop a benchmark
        logger.warning("cannot write logs under {}: {}", directory, exc)
    return Sinks(tuple(ids))


def release(sinks: Sinks) -> None:
    """Remove what ``configure`` added and make the library quiet again."""
    for sink in sinks.ids:
        logger.remove(sink)
    logger.disable("pytest_ubench")
