"""A request in flight, as the client sees it: what the engine and the protocols fill in.

Times are ``perf_counter`` seconds. Once a request has finished its fields go into columns
(``columns.Collector``) and the object is dropped; files are ``record_files``.
"""

from __future__ import annotations

import math

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
