"""Prompt sets. Synthetic prompts are seeded so two runs send the same requests."""

from __future__ import annotations

import numpy as np

_ALPHABET = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def synthetic_prompts(count: int, prompt_tokens: int, seed: int) -> list[str]:
    """Random lowercase words of ``prompt_tokens`` characters in all.

    On the embedded model one character is one token, so the length is exact there; on a BPE
    tokenizer it is an approximation and the results take prompt tokens from the server's usage.
    Each prompt differs from the start, so servers cannot answer from a shared prefix cache.
    """
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(count):
        chars = rng.choice(_ALPHABET, size=prompt_tokens)
        spaces = rng.random(prompt_tokens) < 0.18
        chars[spaces] = " "
        chars[0] = rng.choice(_ALPHABET)
        prompts.append("".join(chars.tolist()))
    return prompts
