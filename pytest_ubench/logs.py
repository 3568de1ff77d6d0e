"""Logging setup for the CLI and the plugin (the library itself stays quiet until enabled).

Levels: ``-v`` gives DEBUG, else ``UBENCHAI_LOG_LEVEL`` (default INFO). A rotating file under
``logs/`` keeps DEBUG detail for post-mortems regardless of the console level.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from loguru import logger

FORMAT = "{time:YYYY-MM-DD HH:mm:ss} | {level: <8} | {name}:{function} - {message}"


def configure(verbose: bool = False, log_dir: Path | None = None, console: bool = True) -> None:
    level = "DEBUG" if verbose else os.environ.get("UBENCHAI_LOG_LEVEL", "INFO").upper()
    logger.remove()
    logger.enable("pytest_ubench")
    if console:
        logger.add(sys.stderr, level=level, format=FORMAT, colorize=None)
    directory = log_dir or Path(os.environ.get("UBENCHAI_LOG_DIR", "logs"))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        logger.add(
            directory / "ubenchai.log", level="DEBUG", format=FORMAT, rotation="10 MB", retention=5, enqueue=False
        )
    except OSError as exc:  # a read-only or full disk must not stop a benchmark
        logger.warning("cannot write logs under {}: {}", directory, exc)
