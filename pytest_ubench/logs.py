"""Logging setup for the CLI and the plugin (the library itself stays quiet until enabled).

Levels: ``-v`` gives DEBUG, else ``UBENCHAI_LOG_LEVEL`` (default INFO). A rotating file under
``logs/`` keeps DEBUG detail for post-mortems regardless of the console level.

The CLI owns its process and replaces loguru's default sink with its own. The plugin is a guest in
someone's pytest run: it adds a sink for ubench's messages only, and ``release`` takes away exactly that
(a sink the user added in conftest.py stays, and keeps receiving what it asked for). Loguru's own default
sink, where nobody configured loguru, would print ubench's DEBUG lines (a Slurm wait polls ``squeue``
every 50 ms) to the terminal: while ubench is in use it is swapped for the same sink that lets ubench's
messages through from INFO only (``UBENCHAI_LOG_LEVEL``, ``-vv``), and given back at the end.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

FORMAT = "{time:YYYY-MM-DD HH:mm:ss} | {level: <8} | {name}:{function} - {message}"
_default = {"id": 0}  # loguru's default sink: 0 at import, a new id once given back by ``release``


@dataclass(frozen=True)
class Sinks:
    """The sinks one ``configure`` added: what ``release`` removes."""

    ids: tuple[int, ...]
    default_swapped: bool = False  # loguru's default stderr sink was replaced, and is given back


def configure(verbose: bool = False, log_dir: Path | None = None, guest: bool = False) -> Sinks:
    level = "DEBUG" if verbose else os.environ.get("UBENCHAI_LOG_LEVEL", "INFO").upper()
    ids = []
    swapped = False
    if not guest:
        logger.remove()
        ids.append(logger.add(sys.stderr, level=level, format=FORMAT, colorize=None))
    else:
        try:
            logger.remove(_default["id"])  # gone already where the user configured loguru: left alone
            swapped = True
        except ValueError:
            pass
        if swapped:
            floor = logger.level(level).no

            def others_and_ours_from_level(record: Any) -> bool:
                return not str(record["name"]).startswith("pytest_ubench") or record["level"].no >= floor

            ids.append(logger.add(sys.stderr, level="DEBUG", filter=others_and_ours_from_level))
    logger.enable("pytest_ubench")
    directory = log_dir or Path(os.environ.get("UBENCHAI_LOG_DIR", "logs"))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        ids.append(logger.add(directory / "ubenchai.log", level="DEBUG", format=FORMAT, rotation="10 MB",
                              retention=5, enqueue=False, filter="pytest_ubench"))  # fmt: skip
    except OSError as exc:  # a read-only or full disk must not stop a benchmark
        logger.warning("cannot write logs under {}: {}", directory, exc)
    return Sinks(tuple(ids), swapped)


def release(sinks: Sinks) -> None:
    """Remove what ``configure`` added and make the library quiet again."""
    for sink in sinks.ids:
        logger.remove(sink)
    if sinks.default_swapped:
        _default["id"] = logger.add(sys.stderr)  # loguru's default, as it was
    logger.disable("pytest_ubench")
