"""The server's own tokenizer, through its ``/tokenize`` and ``/detokenize`` endpoints.

llama.cpp takes ``{"content": ...}`` and answers ``{"tokens": [...]}``; vLLM takes ``{"model", "prompt"}``
and answers with ``tokens`` and ``count``. Which one a server speaks is found on the first call.
Control-plane traffic, so httpx.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..orchestrators.base import tls_context


class NoTokenizer(Exception):
    """The server has no tokenizer endpoint we understand."""


class ServerTokenizer:
    def __init__(self, base_url: str, model: str, timeout_s: float = 10.0) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=timeout_s, verify=tls_context())
        self.model = model
        self.flavour: str | None = None

    def close(self) -> None:
        self.client.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            resp = self.client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise NoTokenizer(f"{path}: {exc}") from None
        if resp.status_code != 200:
            return None
        data = resp.json()
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
                return [t if isinstance(t, int) else t["id"] for t in data["tokens"]]
        raise NoTokenizer("/tokenize: not answered (neither llama.cpp's nor vLLM's form)")

    def detokenize(self, tokens: list[int]) -> str:
        body = {"tokens": tokens} if self.flavour == "llamacpp" else {"model": self.model, "tokens": tokens}
        data = self._post("/detokenize", body)
        text = None if data is None else data.get("content", data.get("prompt"))
        if not isinstance(text, str):
            raise NoTokenizer("/detokenize: not answered")
        return text
