"""A deterministic random-weight Llama model in GGUF, made locally.

Benchmarks on a laptop or in CI must never download weights, yet they need a real inference server
doing real matrix work. This writes a small Llama-architecture model with a character vocabulary and
a ChatML template. The output rows of special and byte tokens are zeroed while the other rows give
logits with a standard deviation near 4, so sampling practically never ends a generation early: every
request yields exactly ``max_tokens`` tokens, one per stream chunk, which makes token counts checkable.
"""

from __future__ import annotations

import hashlib
import os
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_SPECIAL = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
# gguf token types: 1 normal, 2 unknown, 3 control, 6 byte.
_SPECIAL_TYPES = [2, 3, 3, 3, 3]


@dataclass(frozen=True)
class ModelSize:
    """Shape of the generated model; the presets were measured on 2 cores (see FIELD-NOTES)."""

    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx: int = 2048


SIZES: dict[str, ModelSize] = {
    # ~3.5M params: ~2,000 tok/s on 2 cores; the embedded default.
    "tiny": ModelSize(n_embd=256, n_layer=4, n_head=8, n_head_kv=4, n_ff=704),
    # ~25M params: ~500 tok/s.
    "small": ModelSize(n_embd=512, n_layer=8, n_head=8, n_head_kv=4, n_ff=1408),
    # ~136M params: ~100 tok/s, a server that saturates.
    "slow": ModelSize(n_embd=1024, n_layer=12, n_head=16, n_head_kv=4, n_ff=2816),
}


def vocabulary() -> tuple[list[str], list[int]]:
    """Special tokens, 256 byte-fallback tokens, then printable ASCII characters (space as '▁')."""
    tokens = list(_SPECIAL)
    types = list(_SPECIAL_TYPES)
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    chars = [c for c in string.printable if c not in " \t\n\r\x0b\x0c"]
    tokens += ["▁", *chars, "\n"]
    types += [1] * (len(chars) + 2)
    return tokens, types


def default_cache_dir() -> Path:
    """Models are cached per user, so repeated runs and tests share one file."""
    env = os.environ.get("UBENCHAI_MODEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ubenchai" / "models"


def model_path(size: str = "tiny", seed: int = 0, cache_dir: Path | None = None) -> Path:
    """Return the cached model for (size, seed), writing it first if it is missing."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}")
    shape = SIZES[size]
    key = hashlib.sha256(repr((asdict(shape), seed, _FORMAT_VERSION)).encode()).hexdigest()[:12]
    cache = cache_dir or default_cache_dir()
    path = cache / f"ubench-{size}-s{seed}-{key}.gguf"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        write_model(tmp, shape, seed=seed, name=f"ubench-{size}")
        os.replace(tmp, path)  # atomic: concurrent writers produce identical bytes
    return path


_FORMAT_VERSION = 1


def write_model(path: Path, shape: ModelSize, seed: int = 0, name: str = "ubench-tiny") -> None:
    """Write the GGUF file; the same shape and seed always give the same bytes."""
    import gguf  # heavy import, only needed when a model is actually written

    rng = np.random.default_rng(seed)
    tokens, types = vocabulary()
    n_vocab = len(tokens)
    head_dim = shape.n_embd // shape.n_head
    kv_dim = head_dim * shape.n_head_kv

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(shape.n_ctx)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(False)
    w.add_chat_template(CHATML_TEMPLATE)

    def mat(rows: int, cols: int) -> np.ndarray:
        weights: np.ndarray = (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(np.float16)
        return weights

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    w.add_tensor("token_embd.weight", rng.standard_normal((n_vocab, shape.n_embd), dtype=np.float32).astype(np.float16))
    for i in range(shape.n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones(shape.n_embd))
        w.add_tensor(p + "attn_q.weight", mat(shape.n_embd, shape.n_embd))
        w.add_tensor(p + "attn_k.weight", mat(kv_dim, shape.n_embd))
        w.add_tensor(p + "attn_v.weight", mat(kv_dim, shape.n_embd))
        w.add_tensor(p + "attn_output.weight", mat(shape.n_embd, shape.n_embd))
        w.add_tensor(p + "ffn_norm.weight", ones(shape.n_embd))
        w.add_tensor(p + "ffn_gate.weight", mat(shape.n_ff, shape.n_embd))
        w.add_tensor(p + "ffn_up.weight", mat(shape.n_ff, shape.n_embd))
        w.add_tensor(p + "ffn_down.weight", mat(shape.n_embd, shape.n_ff))
    w.add_tensor("output_norm.weight", ones(shape.n_embd))
    # Output rows scaled so logits have std ~4 (hidden state has unit RMS after output_norm);
    # rows of tokens that would end generation or split UTF-8 are zeroed, so they are never chosen.
    out = rng.standard_normal((n_vocab, shape.n_embd), dtype=np.float32) * (4.0 / np.sqrt(shape.n_embd))
    out[[t != 1 for t in types]] = 0.0
    w.add_tensor("output.weight", out.astype(np.float16))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
