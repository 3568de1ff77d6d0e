"""Every process the harness starts dies with the harness, even when the harness is killed with SIGKILL.

``PR_SET_PDEATHSIG`` reaches only the direct child: a service's shell wrapper dies, the programs it
started live on under init. So the harness hands every process group it starts (and every helper
process that is not in one) to a watchdog: a small process of its own session, reading a pipe whose only
writer is the harness. The pipe's end (EOF) is the harness's death, however it died: the watchdog then
stops every group and process still registered (SIGTERM, then SIGKILL after a grace), removes the files
registered (a deployment's key), and exits. A normal stop unregisters what it stopped; services left
running on purpose (``server start``) are never registered.

    python -m pytest_ubench.orchestrators.watchdog      (started by ``guard``; reads +g/-g/+p/-p/+f/-f lines)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

GRACE_S = 5.0

_lock = threading.Lock()
_proc: subprocess.Popen[bytes] | None = None


def _send(line: str, start: bool = True) -> None:
    global _proc
    with _lock:
        if _proc is None or _proc.poll() is not None:
            if not start:
                return
            # Its own session: a Ctrl-C to the terminal's process group must not reach it.
            _proc = subprocess.Popen(
                [sys.executable, "-m", "pytest_ubench.orchestrators.watchdog"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        assert _proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            _proc.stdin.write(line.encode() + b"\n")
            _proc.stdin.flush()


def guard_group(pgid: int) -> None:
    """Stop this process group if the harness dies before ``release_group``."""
    _send(f"+g{pgid}")


def release_group(pgid: int) -> None:
    _send(f"-g{pgid}", start=False)


def guard_process(pid: int) -> None:
    """Stop this process (a helper in the harness's own group) if the harness dies first."""
    _send(f"+p{pid}")


def release_process(pid: int) -> None:
    _send(f"-p{pid}", start=False)


def guard_file(path: str | os.PathLike[str]) -> None:
    """Remove this file (a key only a running deployment needs) if the harness dies first."""
    _send(f"+f{os.fsencode(path).hex()}")  # hex: any path fits on one line


def release_file(path: str | os.PathLike[str]) -> None:
    _send(f"-f{os.fsencode(path).hex()}", start=False)


def _alive(kind: str, ident: int) -> bool:
    try:
        os.killpg(ident, 0) if kind == "g" else os.kill(ident, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(kind: str, ident: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(ident, sig) if kind == "g" else os.kill(ident, sig)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe's end stops it
    watched: set[tuple[str, int]] = set()
    files: set[bytes] = set()
    for raw in sys.stdin.buffer:
        line = raw.decode(errors="replace").strip()
        if len(line) < 3 or line[0] not in "+-":
            continue
        if line[1] == "f":
            with contextlib.suppress(ValueError):
                path = bytes.fromhex(line[2:])
                if line[0] == "+":
                    files.add(path)
                else:
                    files.discard(path)
            continue
        if line[1] not in "gp" or not line[2:].isdigit():
            continue
        entry = (line[1], int(line[2:]))
        if line[0] == "+":
            watched.add(entry)
        else:
            watched.discard(entry)
    # The harness is gone: take down whatever it left.
    for kind, ident in watched:
        _signal(kind, ident, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(_alive(k, i) for k, i in watched):
        time.sleep(0.1)
    for kind, ident in watched:
        _signal(kind, ident, signal.SIGKILL)
    for path in files:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
