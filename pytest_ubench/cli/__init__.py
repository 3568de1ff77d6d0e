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
from . import client, image, monitor, recipe, results, server
from .console import EXIT_INTERRUPTED, EXIT_PIPE, EXIT_RESULTS, EXIT_USAGE, err

EPILOG = """\
exit codes:
  0    every SLO passed (and no regression against a baseline)
  1    an SLO failed, or a regression against the baseline
  2    usage or recipe error (also: an environment variable a recipe reads is not set)
  3    the target could not be reached, or the service failed to start or died
  4    results could not be written (disk full, read-only); no partial file is left
  130  interrupted (services stopped, results so far written)
  141  stdout was closed by its reader (as in: ubenchai compare a b | head)

environment:
  UBENCHAI_CONFIG_DIR    recipe search path (':'-separated), before ./recipes
  UBENCHAI_STATE_DIR     services left running by 'server start' (default ~/.local/state/ubenchai)
  UBENCHAI_LOG_LEVEL     console log level (default INFO; -v: DEBUG)
  UBENCHAI_LOG_DIR       rotating DEBUG log (default logs/)
  UBENCHAI_BASELINE_DIR  where baseline names live (default ubench-baselines/)
  UBENCHAI_CACHE_DIR     this user's caches (default ~/.cache/ubenchai)
  UBENCHAI_MODEL_CACHE   generated models (default ~/.cache/ubenchai/models)
  UBENCHAI_IMAGE_CACHE   pulled Apptainer images (default ~/.cache/ubenchai/images)
  UBENCHAI_VLLM_PYTHON   a Python with vLLM for the vllm recipe (default: the venv made by
                         'python -m pytest_ubench.servers.vllm --install')
  UBENCHAI_SLURM_ACCOUNT Slurm account when the cluster profile has none
  UBENCHAI_LOOP          'asyncio' runs the load client on the standard event loop instead of uvloop

-v and --verbose are taken anywhere on the line, before or after the command.
"""
GLOBAL_FLAGS = ("-v", "--verbose")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ubenchai", description="Benchmark AI-factory services from recipes.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--version", action="version", version=f"ubenchai {__version__}")
    ap.add_argument(*GLOBAL_FLAGS, action="store_true", help="DEBUG logging (else UBENCHAI_LOG_LEVEL or INFO)")
    sub = ap.add_subparsers(
        dest="command", required=True, metavar="{server,client,monitor,compare,report,recipe,image}"
    )
    for group in (server, client, monitor, results, recipe, image):
        group.register(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--") if "--" in argv else len(argv)
    verbose = any(a in GLOBAL_FLAGS for a in argv[:end])  # anywhere: 'ubenchai client run ... -v' too
    args = _parser().parse_args([a for i, a in enumerate(argv) if i >= end or a not in GLOBAL_FLAGS])
    logs.configure(verbose=verbose)
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
