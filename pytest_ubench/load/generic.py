"""Any HTTP endpoint: a method, a path, headers, a body, and the status that counts as success.

For services without a dedicated adapter; records latency, status and response size.
"""

from __future__ import annotations

from ..metrics.records import Record


class StatusSink:
    """Counts the response bytes; any status but the expected one is an error named by the status."""

    __slots__ = ("expect", "rec", "status")

    def __init__(self, rec: Record, expect: int) -> None:
        self.rec = rec
        self.expect = expect
        self.status = 0

    def on_status(self, status: int, t: float) -> None:
        self.status = status
        self.rec.status = status
        self.rec.first = t  # first response byte: the time to first byte of a plain HTTP call

    def on_body(self, data: bytes, t: float) -> None:
        self.rec.nbytes += len(data)

    def finish(self) -> None:
        if self.status != self.expect:
            self.rec.error = f"http_{self.status}"
