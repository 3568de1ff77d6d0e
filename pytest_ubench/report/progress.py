"""Showing a run while it runs: a live rich display on a terminal, one line per stage elsewhere.

Stages are warm-up, load and drain (waiting for the requests still in flight). CI logs get a line
when a stage starts and one at the end, never a stream of carriage returns.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.text import Text

from ..load.engine import Snapshot


def stage(snap: Snapshot, warmup_s: float) -> str:
    if snap.elapsed < warmup_s:
        return "warm-up"
    return "load" if snap.elapsed < snap.total else "drain"


def describe(snap: Snapshot) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    remaining = max(0.0, snap.total - snap.elapsed)
    rate = f"{snap.rate:.1f}/s" + (f" of {snap.target_rate:.1f}/s" if snap.target_rate is not None else "")
    parts = [
        f"{snap.elapsed:.0f}/{snap.total:.0f} s ({remaining:.0f} s left)",
        f"sent {snap.sent}",
        f"done {snap.completed}",
        f"in flight {snap.in_flight}",
        f"rate {rate}",
        f"TTFT p50/p95 {ms(snap.ttft_p50_ms)}/{ms(snap.ttft_p95_ms)} ms",
        f"errors {snap.failed}",
    ]
    if snap.dropped:
        parts.append(f"dropped {snap.dropped}")
    return ", ".join(parts)


class StageLines:
    """A line per stage through ``write`` (CI logs, pytest's terminal)."""

    def __init__(self, label: str, warmup_s: float, write: Callable[[str], None]) -> None:
        self.label, self.warmup_s, self.write = label, warmup_s, write
        self.current: str | None = None

    def __call__(self, snap: Snapshot) -> None:
        now = stage(snap, self.warmup_s)
        if now != self.current:
            self.current = now
            self.write(f"{self.label}: {now}: {describe(snap)}")


class LiveDisplay:
    """A live line on a terminal, redrawn twice a second; gone when the case ends."""

    def __init__(self, label: str, console: Console) -> None:
        self.label = label
        self.live = Live(Text(f"{label}: starting"), console=console, transient=True, refresh_per_second=4)

    def __enter__(self) -> LiveDisplay:
        self.live.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.live.__exit__(exc_type, exc, tb)

    def __call__(self, snap: Snapshot) -> None:
        self.live.update(Text(f"{self.label} [{stage(snap, 0.0)}] {describe(snap)}"))
