"""A deterministic random-weight Llama model in GGUF, made locally.

Benchmarks on a laptop or in CI must never download weights, yet they need a real inference server
doing real matrix work. This writes a small Llama-architecture model with a character vocabulary and
a ChatML template. The output rows of special and byte tokens are zeroed while the other rows give
logits with a standard deviation near 4, so sampling practically never ends a generation early: every
request yields exactly ``max_tokens`` tokens, one per stream chunk, which makes token counts checkable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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
    path = _cached(size, seed, cache_dir).with_suffix(".gguf")
    shape = SIZES[size]
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        write_model(tmp, shape, seed=seed, name=f"ubench-{size}")
        os.replace(tmp, path)  # atomic: concurrent writers produce identical bytes
    return path


_FORMAT_VERSION = 1


def _cached(size: str, seed: int, cache_dir: Path | None) -> Path:
    """Where the model of (size, seed) is cached, without a suffix (one per format)."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}")
    key = hashlib.sha256(repr((asdict(SIZES[size]), seed, _FORMAT_VERSION)).encode()).hexdigest()[:12]
    return (cache_dir or default_cache_dir()) / f"ubench-{size}-s{seed}-{key}"


def weights(shape: ModelSize, seed: int = 0) -> dict[str, np.ndarray]:
    """The model's tensors under their GGUF names, drawn in a fixed order: the same shape and seed
    always give the same numbers, whichever format they are written in."""
    rng = np.random.default_rng(seed)
    _, types = vocabulary()
    n_vocab = len(types)
    kv_dim = shape.n_embd // shape.n_head * shape.n_head_kv

    def mat(rows: int, cols: int) -> np.ndarray:
        weights: np.ndarray = (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(np.float16)
        return weights

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    out = {"token_embd.weight": rng.standard_normal((n_vocab, shape.n_embd), dtype=np.float32).astype(np.float16)}
    for i in range(shape.n_layer):
        p = f"blk.{i}."
        out[p + "attn_norm.weight"] = ones(shape.n_embd)
        out[p + "attn_q.weight"] = mat(shape.n_embd, shape.n_embd)
        out[p + "attn_k.weight"] = mat(kv_dim, shape.n_embd)
        out[p + "attn_v.weight"] = mat(kv_dim, shape.n_embd)
        out[p + "attn_output.weight"] = mat(shape.n_embd, shape.n_embd)
        out[p + "ffn_norm.weight"] = ones(shape.n_embd)
        out[p + "ffn_gate.weight"] = mat(shape.n_ff, shape.n_embd)
        out[p + "ffn_up.weight"] = mat(shape.n_ff, shape.n_embd)
        out[p + "ffn_down.weight"] = mat(shape.n_embd, shape.n_ff)
    out["output_norm.weight"] = ones(shape.n_embd)
    # Output rows scaled so logits have std ~4 (hidden state has unit RMS after output_norm);
    # rows of tokens that would end generation or split UTF-8 are zeroed, so they are never chosen.
    head = rng.standard_normal((n_vocab, shape.n_embd), dtype=np.float32) * (4.0 / np.sqrt(shape.n_embd))
    head[[t != 1 for t in types]] = 0.0
    out["output.weight"] = head.astype(np.float16)
    return out


def write_model(path: Path, shape: ModelSize, seed: int = 0, name: str = "ubench-tiny") -> None:
    """Write the GGUF file; the same shape and seed always give the same bytes."""
    import gguf  # heavy import, only needed when a model is actually written

    tokens, types = vocabulary()
    head_dim = shape.n_embd // shape.n_head

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
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(False)
    w.add_chat_template(CHATML_TEMPLATE)
    for tensor, data in weights(shape, seed).items():
        w.add_tensor(tensor, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def hf_model_dir(size: str = "tiny", seed: int = 0, cache_dir: Path | None = None) -> Path:
    """The same model as ``model_path`` in Hugging Face format (what vLLM loads), cached likewise."""
    base = _cached(size, seed, cache_dir)
    path = base.with_name(base.name + "-hf")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        write_hf_model(tmp, SIZES[size], seed)
        try:
            os.replace(tmp, path)  # atomic; a concurrent writer that won wrote the same files
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """GGUF stores Q and K rows interleaved for llama.cpp's rotary embedding (its converter permutes
    them); Hugging Face Llama keeps each head's halves apart. The inverse, so both files hold one model."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_hf_model(path: Path, shape: ModelSize, seed: int = 0) -> None:
    """config.json, model.safetensors and a character-level fast tokenizer with the ChatML template."""
    from safetensors.numpy import save_file  # only needed when a model is actually written
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tokens, _ = vocabulary()
    eos = tokens.index("<|im_end|>")
    path.mkdir(parents=True)
    names = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
    per_layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                 "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"}  # fmt: skip
    tensors = {}
    for name, data in weights(shape, seed).items():
        base = name.removesuffix(".weight")
        if base.startswith("blk."):
            _, layer, part = base.split(".")
            if part in ("attn_q", "attn_k"):
                data = _unpermute(data, shape.n_head if part == "attn_q" else shape.n_head_kv)
            hf = f"model.layers.{layer}.{per_layer[part]}"
        else:
            hf = names[base]
        tensors[hf + ".weight"] = np.ascontiguousarray(data, dtype=np.float16)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": shape.n_embd, "intermediate_size": shape.n_ff, "num_hidden_layers": shape.n_layer,
        "num_attention_heads": shape.n_head, "num_key_value_heads": shape.n_head_kv,
        "head_dim": shape.n_embd // shape.n_head, "max_position_embeddings": shape.n_ctx,
        "vocab_size": len(tokens), "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False, "torch_dtype": "float16", "bos_token_id": 1, "eos_token_id": eos,
    }  # fmt: skip
    (path / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    # One token per character, as in the GGUF vocabulary (space as '▁'), so prompt lengths stay exact.
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse()])
    tok.add_special_tokens(list(_SPECIAL))
    tok.save(str(path / "tokenizer.json"))
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "<|im_end|>",
        "unk_token": "<unk>", "chat_template": CHATML_TEMPLATE, "model_max_length": shape.n_ctx,
        "clean_up_tokenization_spaces": False,
    }  # fmt: skip
    (path / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=1), encoding="utf-8")
    (path / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": eos}), "utf-8")
