"""Per-request records and their compact on-disk form (JSON Lines), re-readable for re-analysis.

All times are ``perf_counter`` seconds while a run is live; on disk they become milliseconds
relative to the run's start so files from different runs can be merged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from .files import write_atomic

NAN = math.nan


class Record:
    """One request, as the client saw it."""

    __slots__ = (
        "chunk_tokens",
        "chunks",
        "end",
        "error",
        "first",
        "intended",
        "items",
        "nbytes",
        "op",
        "output_tokens",
        "prompt_tokens",
        "recall",
        "replica",
        "server_decode_s",
        "start",
        "status",
        "tokens_from",
        "warmup",
    )

    def __init__(self, intended: float, warmup: bool = False) -> None:
        self.intended = intended
        self.start = NAN
        self.first = NAN  # first content-bearing chunk
        self.chunks: list[float] = []  # arrival time of every content-bearing chunk
        # The output tokens so far at each of those chunks, where the server says (vLLM with
        # stream_options.continuous_usage_stats): a chunk may carry several tokens; empty otherwise.
        self.chunk_tokens: list[int] = []
        self.end = NAN
        self.status = 0
        self.error: str | None = None
        self.prompt_tokens: int | None = None
        self.output_tokens: int | None = None
        self.tokens_from = ""  # "usage" (server-reported) or "chunks" (counted by the client)
        self.warmup = warmup
        self.items = 0  # inputs served by this request (embeddings: the batch); 0 where not counted
        self.nbytes = 0  # response body bytes
        self.op = ""  # the operation class (get/set, a statement's name) where a protocol has several
        self.recall = NAN  # vector search: share of the exact top-k found
        self.server_decode_s = NAN  # the server's own time generating the output (Ollama's eval_duration)
        self.replica = 0  # which of the service's replicas served it (or was last tried)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_row(self, t0: float) -> dict[str, Any]:
        def ms(t: float) -> float | None:
            return None if math.isnan(t) else round((t - t0) * 1000.0, 4)

        row: dict[str, Any] = {
            "intended_ms": ms(self.intended),
            "start_ms": ms(self.start),
            "end_ms": ms(self.end),
            "chunk_ms": [ms(c) for c in self.chunks],
            "status": self.status,
            "error": self.error,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "tokens_from": self.tokens_from,
            "warmup": self.warmup,
            "items": self.items,
            "bytes": self.nbytes,
            "op": self.op,
        }
        if self.chunk_tokens:
            row["chunk_tokens"] = self.chunk_tokens
        if not math.isnan(self.recall):
            row["recall"] = round(self.recall, 6)
        if not math.isnan(self.server_decode_s):
            row["server_decode_ms"] = round(self.server_decode_s * 1000.0, 4)
        if self.replica:
            row["replica"] = self.replica
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Record:
        def s(v: float | None) -> float:
            return NAN if v is None else v / 1000.0

        rec = cls(s(row["intended_ms"]), row.get("warmup", False))
        rec.start, rec.end = s(row["start_ms"]), s(row["end_ms"])
        rec.chunks = [s(c) for c in row["chunk_ms"]]
        rec.chunk_tokens = row.get("chunk_tokens", [])
        rec.first = rec.chunks[0] if rec.chunks else NAN
        rec.status, rec.error = row["status"], row["error"]
        rec.prompt_tokens, rec.output_tokens = row["prompt_tokens"], row["output_tokens"]
        rec.tokens_from = row["tokens_from"]
        rec.items, rec.nbytes, rec.op = row.get("items", 0), row.get("bytes", 0), row.get("op", "")
        rec.recall = row.get("recall", NAN)
        rec.server_decode_s = row["server_decode_ms"] / 1000.0 if "server_decode_ms" in row else NAN
        rec.replica = row.get("replica", 0)
        return rec


def write_jsonl(path: Path, records: Iterable[Record], t0: float) -> None:
    def dump(fh: TextIO) -> None:
        for rec in records:
            fh.write(json.dumps(rec.to_row(t0), separators=(",", ":")))
            fh.write("\n")

    write_atomic(path, dump)


def read_jsonl(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield Record.from_row(json.loads(line))
