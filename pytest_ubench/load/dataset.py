"""Prompt sets: synthetic (seeded, with token-length distributions) or read from local files.

Files are never fetched at run time: a benchmark's input is whatever the recipe points at, on disk.
Malformed lines are errors naming ``file:line``, never skipped: a silently shorter dataset changes
the workload.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

_ALPHABET = np.array(list("abcdefghijklmnopqrstuvwxyz"))


class DatasetError(ValueError):
    """A dataset file that cannot be used, with ``file:line`` and the cause."""


@dataclass(frozen=True)
class Lengths:
    """A token-length distribution: ``fixed`` (mean), ``uniform`` (min..max), ``normal``/``lognormal``."""

    dist: str = "fixed"
    mean: float | None = None
    std: float = 0.0
    min: int = 1
    max: int | None = None

    def draw(self, count: int, rng: np.random.Generator) -> np.ndarray:
        hi = self.max if self.max is not None else np.iinfo(np.int32).max
        if self.dist == "fixed":
            values = np.full(count, float(self.mean or self.min))
        elif self.dist == "uniform":
            values = rng.integers(self.min, hi, size=count, endpoint=True).astype(np.float64)
        elif self.dist == "normal":
            values = rng.normal(float(self.mean or 1.0), self.std, size=count)
        elif self.dist == "lognormal":
            mean = float(self.mean or 1.0)
            sigma2 = np.log1p((self.std / mean) ** 2)  # the lengths' own mean and std, not the log's
            values = rng.lognormal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2), size=count)
        else:
            raise ValueError(f"unknown length distribution {self.dist!r}")
        drawn: np.ndarray = np.clip(np.rint(values), self.min, hi).astype(np.int64)
        return drawn


@dataclass(frozen=True)
class Prompt:
    """One request's input: a text prompt or chat messages (or a whole request ``body``, from traces)."""

    text: str | None = None
    messages: list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    body: dict[str, Any] | None = None


def _rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(stream.encode())])


def random_text(chars: int, rng: np.random.Generator) -> str:
    """Random lowercase words (~18 % spaces); never starting with a space."""
    letters = rng.choice(_ALPHABET, size=chars)
    letters[rng.random(chars) < 0.18] = " "
    if chars:
        letters[0] = rng.choice(_ALPHABET)
    return "".join(letters.tolist())


def synthetic(count: int, prompt: Lengths, output: Lengths, seed: int, stream: str = "") -> list[Prompt]:
    """``count`` random prompts, one character per token.

    On the embedded model one character is one token, so lengths are exact there; elsewhere the
    caller cuts them to exact counts with the server's tokenizer (``cut_to_tokens``) or labels them
    approximate. Each prompt differs from its first character, so no prefix cache can serve it.
    ``stream`` names an independent sequence (the case id): the points of a sweep share one server,
    and if they sent the same prompts, later points would be served from the prompt cache the earlier
    ones filled (measured with llama.cpp: TTFT p50 fell from 25 ms to 6 ms).
    """
    rng = _rng(seed, stream)
    ins, outs = prompt.draw(count, rng), output.draw(count, rng)
    return [Prompt(random_text(int(n), rng), max_tokens=int(m)) for n, m in zip(ins, outs, strict=True)]


Tokenize = Callable[[str], list[int]]
Detokenize = Callable[[list[int]], str]


def cut_to_tokens(text: str, tokens: int, tokenize: Tokenize, detokenize: Detokenize) -> str | None:
    """``text`` cut or padded to exactly ``tokens`` of the server's tokens; None when no cut round-trips."""
    ids = tokenize(text)
    while len(ids) < tokens:  # random letters tokenize to more than one char per token: rarely needed
        text = text + " " + text
        ids = tokenize(text)
    want = tokens
    for _ in range(4):
        candidate = detokenize(ids[:want])
        got = len(tokenize(candidate))
        if got == tokens:
            return candidate
        want += tokens - got  # merges across the cut changed the count: move the cut and retry
        if want <= 0 or want > len(ids):
            return None
    return None


def with_unique_prefix(prompts: list[Prompt], seed: int, stream: str = "") -> list[Prompt]:
    """A random 12-letter word before each prompt, so repeated prompts never hit a warm prefix cache."""
    rng = _rng(seed + 1, stream)
    out = []
    for p in prompts:
        tag = "".join(rng.choice(_ALPHABET, size=12).tolist()) + " "
        if p.messages is not None:
            first, *rest = p.messages
            out.append(replace(p, messages=[{**first, "content": tag + str(first.get("content", ""))}, *rest]))
        elif p.text is not None:
            out.append(replace(p, text=tag + p.text))
        else:
            out.append(p)  # a verbatim body is sent as recorded
    return out


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        fh = path.open(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with fh:
        n = 0
        try:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    yield n, _object(path, n, line)
        except UnicodeDecodeError:
            raise DatasetError(f"{path}:{n + 1}: not UTF-8 text") from None


def _object(path: Path, n: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{n}: not JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _max_tokens(where: str, obj: dict[str, Any]) -> int | None:
    value = obj.get("max_tokens")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise DatasetError(f"{where}: 'max_tokens' must be a positive integer, got {value!r}")
    return value


def _prompt(where: str, obj: dict[str, Any]) -> Prompt:
    if "prompt" in obj:
        if not isinstance(obj["prompt"], str) or not obj["prompt"]:
            raise DatasetError(f"{where}: 'prompt' must be a non-empty string")
        return Prompt(obj["prompt"], max_tokens=_max_tokens(where, obj))
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
            raise DatasetError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
        return Prompt(messages=msgs, max_tokens=_max_tokens(where, obj))
    raise DatasetError(f"{where}: needs 'prompt' (text) or 'messages' (chat)")


def read_prompts(path: Path, limit: int | None = None) -> list[Prompt]:
    """JSON Lines of ``{"prompt": ..., "max_tokens"?: n}`` or ``{"messages": [...], "max_tokens"?: n}``."""
    out = []
    for n, obj in _lines(path):
        out.append(_prompt(f"{path}:{n}", obj))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DatasetError(f"{path}: no prompts")
    return out


def read_sharegpt(path: Path, limit: int | None = None, chars_per_token: float = 4.0) -> list[Prompt]:
    """ShareGPT conversations (a JSON array, or JSON Lines): the first human turn is the prompt and the
    length of the reply that follows sets ``max_tokens`` (~4 characters per token, as vLLM's users
    expect); conversations without a human turn followed by a reply are skipped, as vLLM does."""
    if path.suffix == ".jsonl":
        entries: Iterator[tuple[str, Any]] = ((f"{path}:{n}", obj) for n, obj in _lines(path))
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise DatasetError(f"{path}: not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a JSON array of conversations")
        entries = ((f"{path}: entry {i}", obj) for i, obj in enumerate(data))
    out = []
    for where, obj in entries:
        turns = obj.get("conversations") if isinstance(obj, dict) else None
        if not isinstance(turns, list) or not all(isinstance(t, dict) and "from" in t and "value" in t for t in turns):
            raise DatasetError(f"{where}: needs 'conversations': a list of {{from, value}} turns")
        for ask, answer in itertools.pairwise(turns):
            if ask["from"] == "human" and answer["from"] in ("gpt", "chatgpt", "bard", "model") and ask["value"]:
                reply = max(1, round(len(str(answer["value"])) / chars_per_token))
                out.append(Prompt(str(ask["value"]), max_tokens=reply))
                break
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DatasetError(f"{path}: no conversation with a human turn followed by a reply")
    return out


def read_trace(path: Path) -> tuple[np.ndarray, list[Prompt]]:
    """A JSONL trace: ``{"timestamp": s, ...}`` with a prompt, messages or a whole ``body`` per line.

    Timestamps are seconds (absolute or relative; the first becomes 0) and must not go backwards.
    """
    times: list[float] = []
    prompts: list[Prompt] = []
    for n, obj in _lines(path):
        where = f"{path}:{n}"
        ts = obj.get("timestamp")
        if not isinstance(ts, int | float) or isinstance(ts, bool):
            raise DatasetError(f"{where}: needs a numeric 'timestamp' (seconds)")
        if times and ts < times[-1]:
            raise DatasetError(f"{where}: timestamp {ts} is earlier than the line before ({times[-1]})")
        if "body" in obj:
            if not isinstance(obj["body"], dict):
                raise DatasetError(f"{where}: 'body' must be a JSON object (the request body)")
            prompts.append(Prompt(body=obj["body"]))
        else:
            prompts.append(_prompt(where, obj))
        times.append(float(ts))
    if not times:
        raise DatasetError(f"{path}: no requests")
    arr = np.asarray(times)
    return arr - arr[0], prompts
