"""The ``ubenchai`` command: the same run core as the pytest plugin, outside pytest; one module per
command group, each registering its parser and the handler that translates its options.

Exit codes (documented in the README): 0 every SLO passed; 1 an SLO failed; 2 usage or recipe error;
3 the target could not be reached or the service failed; 4 results could not be written (disk full,
read-only); 130 interrupted; 141 stdout was closed by its reader.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import interrupts, logs
from .._version import __version__
from ..metrics.results import ResultsError
from ..orchestrators.base import MissingVariable
from ..recipes import loader
from . import client, monitor, recipe, results, server
from .console import EXIT_INTERRUPTED, EXIT_PIPE, EXIT_RESULTS, EXIT_USAGE, err


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ubenchai", description="Benchmark AI-factory services from recipes.")
    ap.add_argument("--version", action="version", version=f"ubenchai {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="DEBUG logging (else UBENCHAI_LOG_LEVEL or INFO)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{server,client,monitor,compare,report,recipe}")
    for group in (server, client, monitor, results, recipe):
        group.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(verbose=args.verbose)
    interrupts.sigterm_as_interrupt()  # services are stopped and partial results written
    try:
        code: int = args.handler(args)
        return code
    except (loader.RecipeError, ValueError, MissingVariable) as exc:
        err(str(exc))
        return EXIT_USAGE
    except ResultsError as exc:
        err(str(exc))
        return EXIT_RESULTS
    except KeyboardInterrupt:
        err("interrupted; services stopped, results gathered so far were written")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Quietly, and without the interpreter's own failing flush of stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE


def run() -> None:
    sys.exit(main())
