"""Dataset loaders and length distributions; malformed input names file:line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pytest_ubench.load.dataset import (
    DatasetError,
    Lengths,
    Prompt,
    cut_to_tokens,
    read_prompts,
    read_sharegpt,
    read_trace,
    synthetic,
    with_unique_prefix,
)


def test_length_distributions_have_their_moments():
    rng = np.random.default_rng(3)
    n = Lengths("normal", 200, 40, min=1, max=1000).draw(20_000, rng)
    assert abs(n.mean() - 200) < 2 and abs(n.std() - 40) < 2
    ln = Lengths("lognormal", 300, 150, min=1).draw(50_000, rng)
    assert abs(ln.mean() - 300) < 6 and abs(ln.std() - 150) < 8
    u = Lengths("uniform", min=10, max=20).draw(5_000, rng)
    assert u.min() == 10 and u.max() == 20
    clipped = Lengths("normal", 100, 100, min=50, max=120).draw(5_000, rng)
    assert clipped.min() == 50 and clipped.max() == 120
    assert Lengths("fixed", 64, min=64, max=64).draw(3, rng).tolist() == [64, 64, 64]


def test_synthetic_prompts_follow_the_drawn_lengths():
    prompts = synthetic(200, Lengths("uniform", min=5, max=50), Lengths("normal", 30, 5), seed=1)
    assert {5 <= len(p.text or "") <= 50 for p in prompts} == {True}
    assert len({len(p.text or "") for p in prompts}) > 20
    assert 25 < np.mean([p.max_tokens for p in prompts]) < 35


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_prompt_file_reads_prompts_and_messages(tmp_path):
    path = _write(tmp_path, "p.jsonl", [
        json.dumps({"prompt": "hello", "max_tokens": 5}),
        "",
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
    ])  # fmt: skip
    got = read_prompts(path)
    assert got == [Prompt("hello", max_tokens=5), Prompt(messages=[{"role": "user", "content": "hi"}])]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "a"', "not JSON"),
        ('["prompt"]', "expected a JSON object"),
        ('{"text": "a"}', "needs 'prompt' (text) or 'messages' (chat)"),
        ('{"prompt": "a", "max_tokens": -1}', "'max_tokens' must be a positive integer"),
        ('{"messages": "hi"}', "'messages' must be a non-empty list"),
    ],
)
def test_malformed_prompt_lines_name_file_and_line(tmp_path, line, message):
    path = _write(tmp_path, "p.jsonl", [json.dumps({"prompt": "ok"}), line])
    with pytest.raises(DatasetError, match="^" + re.escape(f"{path}:2: {message}")):
        read_prompts(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.jsonl: cannot read"):
        read_prompts(tmp_path / "nope.jsonl")


def test_sharegpt_takes_the_first_human_turn_and_the_reply_length(tmp_path):
    convs = [
        {"id": "a", "conversations": [{"from": "human", "value": "What is HPC?"}, {"from": "gpt", "value": "x" * 40}]},
        {"id": "b", "conversations": [{"from": "gpt", "value": "unprompted"}]},  # skipped, as vLLM does
        {"id": "c", "conversations": [{"from": "human", "value": "q2"}, {"from": "gpt", "value": "yy"}]},
    ]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(convs))
    got = read_sharegpt(path)
    assert got == [Prompt("What is HPC?", max_tokens=10), Prompt("q2", max_tokens=1)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(convs[0]) + "\n" + json.dumps({"conversations": [{"value": "no from"}]}) + "\n")
    with pytest.raises(DatasetError, match=rf"^{bad}:2: needs 'conversations'"):
        read_sharegpt(bad)


def test_trace_timestamps_are_relative_and_ordered(tmp_path):
    path = _write(tmp_path, "t.jsonl", [
        json.dumps({"timestamp": 100.0, "prompt": "a"}),
        json.dumps({"timestamp": 100.5, "body": {"messages": [{"role": "user", "content": "b"}], "max_tokens": 3}}),
    ])  # fmt: skip
    times, prompts = read_trace(path)
    assert times.tolist() == [0.0, 0.5]
    assert prompts[1].body == {"messages": [{"role": "user", "content": "b"}], "max_tokens": 3}
    back = _write(
        tmp_path, "b.jsonl", [json.dumps({"timestamp": 2, "prompt": "a"}), json.dumps({"timestamp": 1, "prompt": "b"})]
    )
    with pytest.raises(DatasetError, match=rf"^{back}:2: timestamp 1 is earlier"):
        read_trace(back)
    no_ts = _write(tmp_path, "n.jsonl", [json.dumps({"prompt": "a"})])
    with pytest.raises(DatasetError, match=rf"^{no_ts}:1: needs a numeric 'timestamp'"):
        read_trace(no_ts)


def test_unique_prefix_makes_repeated_prompts_differ():
    same = [Prompt("the same prompt")] * 50 + [Prompt(messages=[{"role": "user", "content": "chat"}])]
    out = with_unique_prefix(same, seed=1)
    assert len({p.text for p in out[:50]}) == 50
    assert all(p.text.endswith(" the same prompt") for p in out[:50])
    assert out[50].messages[0]["content"].endswith(" chat")


def test_cut_to_tokens_with_a_word_tokenizer():
    """A tokenizer whose tokens are words: the cut lands on exactly the asked count."""
    vocab: dict[str, int] = {}

    def tokenize(text: str) -> list[int]:
        return [vocab.setdefault(w, len(vocab)) for w in text.split()]

    def detokenize(ids: list[int]) -> str:
        words = {v: k for k, v in vocab.items()}
        return " ".join(words[i] for i in ids)

    text = "alpha beta gamma delta epsilon"
    assert cut_to_tokens(text, 3, tokenize, detokenize) == "alpha beta gamma"
    assert len(tokenize(cut_to_tokens(text, 12, tokenize, detokenize) or "")) == 12  # padded by repeating
