"""SIGTERM takes the Ctrl-C path (a batch scheduler's or a CI runner's stop): services are stopped and the
results measured so far are written, exactly as after Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def sigterm_as_interrupt() -> Handler:
    """From now on SIGTERM raises KeyboardInterrupt in the main thread (elsewhere: nothing to do); returns
    the handler it replaced, for ``restore``."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))


def restore(previous: Handler) -> None:
    """Put back the SIGTERM handler that ``sigterm_as_interrupt`` replaced."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


async def stopped() -> None:
    """Return once the process gets SIGTERM or SIGINT: how our asyncio servers (the key front, the test
    servers) end cleanly when their job or test stops them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
