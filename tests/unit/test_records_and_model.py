from __future__ import annotations

from pytest_ubench.testing.tinymodel import SIZES, model_path, write_model


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
