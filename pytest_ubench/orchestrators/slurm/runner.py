"""How Slurm commands are run: a small swappable interface, like an HTTP client's transport.

The real runner executes the command with a timeout (an ``srun`` or ``squeue`` against an unhappy
controller can hang for ever) and without the ``SBATCH_*``/``SQUEUE_*``/... variables a user's shell
may carry, which would silently change what we submit or how output is formatted. Unit tests replace
it with a fake that answers from a script.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from loguru import logger

from ..base import ServiceError


class SlurmError(ServiceError):
    """A Slurm command failed, timed out or is missing; the message names the command.

    A ServiceError, so a controller that stops answering mid-run ends the case as an infrastructure
    error with this message (CLI exit 3), never as a traceback.
    """


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    def run(self, argv: Sequence[str], timeout: float) -> Completed: ...


_DROPPED_PREFIXES = ("SBATCH_", "SQUEUE_", "SCANCEL_", "SACCT_", "SINFO_", "SCONTROL_")


def clean_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    return {k: v for k, v in env.items() if not k.startswith(_DROPPED_PREFIXES)}


class SubprocessRunner:
    def run(self, argv: Sequence[str], timeout: float) -> Completed:
        logger.debug("slurm: {}", " ".join(argv))
        try:
            proc = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                timeout=timeout,
                env=clean_environment(),
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError:
            raise SlurmError(f"{argv[0]}: not found on PATH (is this a Slurm login node?)") from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{' '.join(argv)}: no answer after {timeout:g} s (is slurmctld reachable?)") from None
        return Completed(proc.returncode, proc.stdout, proc.stderr)
