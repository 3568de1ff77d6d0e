"""OpenAI-compatible APIs: ``openai-chat`` and ``openai-completions`` (streamed or not; read by the
engine's completions reader, ``load.responses``) and ``openai-embeddings`` (batches of inputs).

Every request body is built before the run; output lengths are drawn per prompt (seeded).
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from ..load.dataset import Prompt
from ..load.http import build_request
from ..load.planning import Planned, json_headers, load_plan, url_path
from ..load.responses import JsonSink, count_of
from ..metrics.records import Record
from ..orchestrators.base import Endpoint
from ..recipes.sweep import Case
from .base import BaseProtocol
from .prompts import generation_plan, prompted

PATHS = {
    "openai-chat": "/v1/chat/completions",
    "openai-completions": "/v1/completions",
    "openai-embeddings": "/v1/embeddings",
}


def request_body(
    protocol: str, model: str, prompt: Prompt, max_tokens: int, stream: bool, params: dict[str, Any]
) -> bytes:
    """The JSON body for one prompt; ``max_tokens`` applies where the prompt gives none.

    A recorded ``body`` (trace replay) is sent as recorded, except that ``stream`` follows the
    workload: the response is parsed as the workload says it streams.
    """
    if prompt.body is not None:
        body: dict[str, Any] = {"model": model, **prompt.body, "stream": stream}
    else:
        body = {"model": model, "max_tokens": prompt.max_tokens or max_tokens, "stream": stream}
        if protocol == "openai-chat":
            body["messages"] = prompt.messages or [{"role": "user", "content": prompt.text}]
        elif prompt.messages is not None:
            raise ValueError("chat 'messages' need protocol openai-chat (openai-completions takes a prompt)")
        else:
            body["prompt"] = prompt.text
        body.update(params)
    if stream:
        body.setdefault("stream_options", {"include_usage": True})
    return json.dumps(body, separators=(",", ":")).encode()


def embeddings_body(model: str, inputs: list[str], params: dict[str, Any]) -> bytes:
    return json.dumps({"model": model, "input": inputs, **params}, separators=(",", ":")).encode()


class EmbeddingsSink(JsonSink):
    """``/v1/embeddings``: one vector per input; ``items`` is how many came back."""

    __slots__ = ("expected",)

    def __init__(self, rec: Record, expected: int) -> None:
        super().__init__(rec)
        self.expected = expected

    def finish(self) -> None:
        rec = self.rec
        if (obj := self._parsed()) is None:
            return
        data, usage = obj.get("data"), obj.get("usage")
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            rec.error = "malformed_response"
            return
        vectors = [d.get("embedding") for d in data]
        if not all(isinstance(v, list) for v in vectors) or (usage is not None and not isinstance(usage, dict)):
            rec.error = "malformed_response"
            return
        if len(vectors) != self.expected or not all(vectors):
            rec.error = "wrong_count"  # fewer vectors than inputs is a failure, not a faster success
            return
        rec.items = len(vectors)
        if usage and (prompt := count_of(usage.get("prompt_tokens"))) is not None:
            rec.prompt_tokens = prompt


class Completions(BaseProtocol):
    """Chat and text completions; responses read by the engine's default (completions) reader."""

    names = ("openai-chat", "openai-completions")
    streams = True

    def plan(self, case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
        assert endpoint is not None
        path = url_path(endpoint) + PATHS[case.recipe.workload.protocol]
        return generation_plan(case, endpoint, duration_s, request_body, path, json_headers(case, endpoint))


class Embeddings(BaseProtocol):
    """``/v1/embeddings``: ``batch_size`` inputs per request; ``items_per_s`` counts inputs."""

    names = ("openai-embeddings",)
    rate_unit = "inputs/s"
    batches = True

    def plan(self, case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
        assert endpoint is not None
        w = case.recipe.workload
        got = prompted(case, endpoint, duration_s)
        texts = [p.text or "" for p in got.prompts]
        b = w.batch_size
        bodies = [embeddings_body(w.model, [texts[(i + k) % len(texts)] for k in range(b)], w.params)
                  for i in range(0, len(texts), b)]  # fmt: skip
        path = url_path(endpoint) + PATHS["openai-embeddings"]
        headers = json_headers(case, endpoint)
        reqs = [build_request("POST", endpoint.host, endpoint.port, path, body, headers) for body in bodies]
        info = got.dataset | {"batch_size": b}
        plan = load_plan(case, got.arrivals, got.duration_s, reqs, sink=partial(EmbeddingsSink, expected=b))
        return Planned(plan, info, got.stages)


COMPLETIONS = Completions()
EMBEDDINGS = Embeddings()
