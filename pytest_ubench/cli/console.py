"""What every ``ubenchai`` command prints with: a console for messages (stderr) and one for tables and
results (stdout), errors on one line, pages written as HTML or PDF, and how to reach a node's service."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..metrics.files import write_text
from ..orchestrators.base import Endpoint
from ..report import browser

EXIT_OK, EXIT_SLO, EXIT_USAGE, EXIT_TARGET, EXIT_RESULTS, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_PIPE = 128 + signal.SIGPIPE  # the reader went away (`| head`): what a shell tool killed by SIGPIPE reports


class _Out(Console):
    """Rich exits 1 on a closed pipe; ours goes the way of every other write to stdout (``main``)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


console = Console(stderr=True)
out = _Out(width=None if sys.stdout.isatty() else 200)  # tables are not cut short in pipes and logs


def listing(as_json: bool, columns: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> None:
    """A list command's answer: a table for people, a JSON array of objects for programs (``--json``),
    and for people a sentence instead of an empty table."""
    if as_json:
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2))
    elif not rows:
        print(empty)
    else:
        table = Table(*columns)
        for row in rows:
            table.add_row(*row)
        out.print(table)


def json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON (an array of objects) instead of a table")


def err(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def page(target: Path, fmt: str, text: str) -> None:
    """An HTML report, or the same page printed to PDF or its first screen as a PNG (the HTML is kept
    beside either)."""
    html = target if fmt == "html" else target.with_suffix(".html")
    write_text(html, text)
    if fmt == "pdf":
        browser.print_pdf(html, target)
    elif fmt == "png":
        browser.screenshot(html, target)


def tunnel_hint(endpoint: Endpoint, what: str) -> None:
    """A service in a batch job runs on a compute node: say how a workstation reaches it."""
    if not endpoint.job_id or not endpoint.node:
        return
    login, port = socket.getfqdn(), endpoint.port
    if endpoint.host.startswith(("127.", "::1", "localhost")):  # loopback on the node: jump through the login
        tunnel = f"ssh -J {login} -L {port}:127.0.0.1:{port} {endpoint.node}"
    else:
        tunnel = f"ssh -L {port}:{endpoint.host}:{port} {login}"
    console.print(f"{what} from your workstation: {tunnel}  then open http://localhost:{port}", soft_wrap=True)
