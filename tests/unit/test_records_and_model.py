from __future__ import annotations

import math

from pytest_ubench.metrics.records import Record, read_jsonl, write_jsonl
from pytest_ubench.testing.tinymodel import SIZES, model_path, write_model


def test_records_round_trip(tmp_path):
    r = Record(100.5, warmup=True)
    r.start, r.end, r.chunks = 100.501, 100.7, [100.6, 100.65]
    r.first = r.chunks[0]
    r.status, r.output_tokens, r.prompt_tokens, r.tokens_from = 200, 2, 9, "usage"
    bad = Record(100.8)
    bad.end, bad.error = 100.9, "connect"
    write_jsonl(tmp_path / "r.jsonl", [r, bad], t0=100.0)
    back = list(read_jsonl(tmp_path / "r.jsonl"))
    assert back[0].intended * 1000 == 500.0 and back[0].warmup
    assert [round(c * 1000, 3) for c in back[0].chunks] == [600.0, 650.0]
    assert back[0].output_tokens == 2 and back[0].tokens_from == "usage"
    assert back[1].error == "connect" and math.isnan(back[1].start)


def test_generated_model_is_deterministic(tmp_path):
    a, b, c = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    write_model(a, SIZES["tiny"], seed=1)
    write_model(b, SIZES["tiny"], seed=1)
    write_model(c, SIZES["tiny"], seed=2)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_model_cache_reuses_the_file(tmp_path):
    p1 = model_path("tiny", 0, cache_dir=tmp_path)
    mtime = p1.stat().st_mtime_ns
    assert model_path("tiny", 0, cache_dir=tmp_path) == p1
    assert p1.stat().st_mtime_ns == mtime
