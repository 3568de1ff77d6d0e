"""SIGTERM takes the Ctrl-C path (a batch scheduler's or a CI runner's stop): services are stopped and the
results measured so far are written, exactly as after Ctrl-C."""

from __future__ import annotations

import signal
import threading


def sigterm_as_interrupt() -> None:
    """From now on SIGTERM raises KeyboardInterrupt in the main thread (elsewhere: nothing to do)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
