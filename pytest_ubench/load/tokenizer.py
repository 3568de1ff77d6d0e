"""The server's own tokenizer, through its ``/tokenize`` and ``/detokenize`` endpoints.

llama.cpp takes ``{"content": ...}`` and answers ``{"tokens": [...]}``; vLLM takes ``{"model", "prompt"}``
and answers with ``tokens`` and ``count``. Which one a server speaks is found on the first call.
Control-plane traffic, so httpx.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..orchestrators import control
from ..orchestrators.base import tls_context


class NoTokenizer(Exception):
    """The server has no tokenizer endpoint we understand."""


class ServerTokenizer:
    """``timeout_s``: each call's whole answer (``workload.timeouts.side_s``); a server that does not give
    one in time, or answers something that is not JSON, has no tokenizer we can use."""

    def __init__(
        self, base_url: str, model: str, timeout_s: float = 10.0, headers: dict[str, str] | None = None
    ) -> None:
        self.client = httpx.Client(base_url=base_url, verify=tls_context(), headers=headers)
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.model = model
        self.flavour: str | None = None

    def close(self) -> None:
        self.client.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        url = self.base_url + path
        try:
            resp = control.call(self.client, "POST", url, self.timeout_s, json=body)
            if resp.status_code != 200:
                return None
            data = control.json_of(resp, url)
        except control.SideCallFailed as exc:
            raise NoTokenizer(str(exc)) from None
        return data if isinstance(data, dict) else None

    def tokenize(self, text: str) -> list[int]:
        bodies = {
            "llamacpp": {"content": text, "add_special": False},
            "vllm": {"model": self.model, "prompt": text, "add_special_tokens": False},
        }
        for flavour in [self.flavour] if self.flavour else bodies:
            data = self._post("/tokenize", bodies[flavour])
            if data is not None and isinstance(data.get("tokens"), list):
                self.flavour = flavour
                ids = [i for t in data["tokens"] if isinstance(i := t.get("id") if isinstance(t, dict) else t, int)]
                if len(ids) != len(data["tokens"]):
                    raise NoTokenizer(f"{self.base_url}/tokenize: answered tokens that are not ids")
                return ids
        raise NoTokenizer("/tokenize: not answered (neither llama.cpp's nor vLLM's form)")

    def detokenize(self, tokens: list[int]) -> str:
        body = {"tokens": tokens} if self.flavour == "llamacpp" else {"model": self.model, "tokens": tokens}
        data = self._post("/detokenize", body)
        text = None if data is None else data.get("content", data.get("prompt"))
        if not isinstance(text, str):
            raise NoTokenizer("/detokenize: not answered")
        return text
