"""Calls beside the load (a health check, ``/tokenize``, ``/detokenize``): each with a total deadline and
a bounded answer, whatever the server does.

httpx's timeouts bound each read, not a call: a server that drips one byte a second never trips them and
holds the run for ever. Here the body is read chunk by chunk against the call's deadline (a call ends
within its deadline plus at most one read's wait), and an answer over ``max_bytes`` is refused.
"""

from __future__ import annotations

import time
from typing import Any

import httpx


class SideCallFailed(Exception):
    """A call beside the load that did not give a whole answer; the message names the endpoint."""


def call(
    client: httpx.Client,
    method: str,
    url: str,
    deadline_s: float,
    json: Any = None,
    max_bytes: int = 1 << 20,
) -> httpx.Response:
    """The whole response of one call, read within ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    body = bytearray()
    try:
        with client.stream(method, url, json=json, timeout=httpx.Timeout(deadline_s)) as resp:
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise SideCallFailed(f"{url}: an answer of more than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise SideCallFailed(f"{url}: no whole answer within {deadline_s:g} s (it is still sending)")
    except httpx.TimeoutException:
        raise SideCallFailed(f"{url}: no answer within {deadline_s:g} s") from None
    except httpx.HTTPError as exc:
        raise SideCallFailed(f"{url}: {type(exc).__name__}: {exc}") from None
    # The body is decoded already (gzip, deflate): the copy must not say it is encoded.
    headers = {k: v for k, v in resp.headers.items() if k.lower() not in ("content-encoding", "content-length")}
    return httpx.Response(resp.status_code, headers=headers, content=bytes(body))


def json_of(resp: httpx.Response, url: str) -> Any:
    """The answer's JSON; an answer that is not JSON is a failed call naming the endpoint."""
    try:
        return resp.json()
    except ValueError:
        raise SideCallFailed(f"{url}: answered HTTP {resp.status_code} with something that is not JSON") from None
