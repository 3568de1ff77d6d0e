"""Columnar records against the objects they came from: every field back from memory and from Parquet, every
per-request figure against formulas written out here one request at a time, selections that keep each
request's own chunks."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pytest_ubench.metrics import record_files
from pytest_ubench.metrics.columns import CODED, ROW, Collector, Records
from pytest_ubench.metrics.record_files import Parts, read_case, read_parquet, write_jsonl, write_parquet
from pytest_ubench.metrics.records import Record

T0 = 5000.25  # a perf_counter reading: the run's start


def _random_records(n: int, seed: int = 1) -> list[Record]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        rec = Record(T0 + i * 0.01 + rng.random() * 0.005, warmup=rng.random() < 0.1)
        kind = rng.random()
        if kind < 0.05:  # dropped by an open loop: never sent, never ended
            rec.error = "dropped"
            out.append(rec)
            continue
        rec.start = rec.intended + rng.random() * 0.002
        if kind < 0.15:
            rec.end, rec.error, rec.status = rec.start + 0.003, rng.choice(["http_503", "timeout", "connect"]), 503
            out.append(rec)
            continue
        rec.status = 200
        t = rec.start + 0.01 + rng.random() * 0.05
        chunks = []
        for _ in range(rng.randrange(0, 12)):
            chunks.append(t)
            t += rng.random() * 0.02
        rec.chunks = chunks
        rec.first = chunks[0] if chunks else math.nan
        if chunks and rng.random() < 0.5:  # the server's token count at each chunk (vLLM's usage)
            rec.chunk_tokens = list(itertools.accumulate(rng.randrange(0, 4) for _ in chunks))
        rec.end = t + 0.001
        rec.output_tokens = rng.choice([None, len(chunks), len(chunks) * 2])
        rec.prompt_tokens = rng.choice([None, 17])
        rec.tokens_from = "usage" if rec.output_tokens is not None else ""
        rec.items, rec.nbytes = rng.randrange(0, 5), rng.randrange(0, 1 << 40)
        rec.op = rng.choice(["", "get", "set"])
        rec.recall = rng.choice([math.nan, rng.random()])
        rec.server_decode_s = rng.choice([math.nan, rng.random()])
        rec.replica = rng.randrange(0, 3)
        out.append(rec)
    return out


def _same(a: Record, b: Record) -> None:
    """Equal, times to the microsecond (what is kept), float32 fields to their precision."""
    for f in ("intended", "start", "first", "end"):
        x, y = getattr(a, f), getattr(b, f)
        assert (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 0.6e-6, (f, x, y)
    assert len(a.chunks) == len(b.chunks) and all(abs(x - y) <= 1.1e-6 for x, y in zip(a.chunks, b.chunks, strict=True))
    assert a.chunk_tokens == b.chunk_tokens
    for f in ("status", "error", "prompt_tokens", "output_tokens", "tokens_from", "warmup", "items", "nbytes", "op"):
        assert getattr(a, f) == getattr(b, f), f
    assert a.replica == b.replica
    for f in ("recall", "server_decode_s"):
        x, y = getattr(a, f), getattr(b, f)
        assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-6), f


def test_a_row_is_at_most_100_bytes_and_a_chunk_4() -> None:
    """The issue's budget: memory per request and per chunk, as laid out."""
    assert ROW.itemsize <= 100
    r = Records.of(_random_records(200), T0)
    assert r.chunk_us.itemsize == 4


def test_records_come_back_whole_from_memory_and_from_parquet(tmp_path: Path) -> None:
    recs = _random_records(3000)
    table = Records.of(recs, T0)
    assert len(table) == len(recs)
    for a, b in zip(recs, table, strict=True):
        _same(a, b)
    write_parquet(tmp_path / "r.parquet", table, {"case_id": "c"})
    back = read_parquet(tmp_path / "r.parquet")
    back.t0 = T0
    for a, b in zip(recs, back, strict=True):
        _same(a, b)
    assert record_files.metadata(tmp_path / "r.parquet")["case_id"] == "c"


def test_a_collector_that_spills_keeps_what_one_in_memory_does(tmp_path: Path) -> None:
    recs = _random_records(2500, seed=3)
    kept, spilled = Collector(T0, block=256), Collector(T0, Parts(tmp_path / "parts"), block=256)
    for rec in reversed(recs):  # finished out of order: the table comes back in intended order
        kept.add(rec)
        spilled.add(rec)
    spilled.settle()  # blocks are written in a thread of their own
    assert len(list((tmp_path / "parts").glob("*.parquet"))) == 9  # 2500 rows: 9 blocks of 256 (196 kept)
    a, b = kept.finish(), spilled.finish()
    for f in ROW.names:
        if f in CODED:  # codes are each table's own: the strings are what must agree
            assert [a.names[f][k] for k in a.rows[f]] == [b.names[f][k] for k in b.rows[f]], f
        else:
            assert np.array_equal(a.rows[f], b.rows[f], equal_nan=a.rows[f].dtype.kind == "f"), f
    assert np.array_equal(a.chunk_us, b.chunk_us) and np.array_equal(a.chunk_tokens, b.chunk_tokens)
    for x, y in zip(recs, b, strict=True):
        _same(x, y)


def _brute(rec: Record) -> dict[str, object]:
    """The per-request figures of docs/metrics.md, one request at a time."""
    e2e = (rec.end - rec.intended) * 1000
    ttft = (rec.first - rec.intended) * 1000 if rec.first == rec.first else None
    itl = [(b - a) * 1000 for a, b in itertools.pairwise(rec.chunks)]
    per_token = []
    if rec.chunk_tokens and len(rec.chunk_tokens) == len(rec.chunks):
        for gap, (k0, k1) in zip(itl, itertools.pairwise(rec.chunk_tokens), strict=True):
            if k1 > k0:
                per_token += [gap / (k1 - k0)] * (k1 - k0)
    tpot = (e2e - ttft) / (rec.output_tokens - 1) if ttft is not None and (rec.output_tokens or 0) > 1 else None
    return {"ttft": ttft, "e2e": e2e, "itl": itl, "tok": per_token, "tpot": tpot}


def test_per_request_figures_equal_a_brute_force_over_the_objects() -> None:
    recs = [r for r in _random_records(1500, seed=7) if r.error is None]
    table = Records.of(recs, T0)
    v = table.values()
    # The oracle reads the records as they are kept (times to the µs): the same inputs, computed apart.
    kept = list(table)
    for i, rec in enumerate(kept):
        b = _brute(rec)
        assert v.e2e_ms[i] == pytest.approx(b["e2e"], abs=1e-6)
        assert (math.isnan(v.ttft_ms[i]) and b["ttft"] is None) or v.ttft_ms[i] == pytest.approx(b["ttft"], abs=1e-6)
        assert (math.isnan(v.tpot_ms[i]) and b["tpot"] is None) or v.tpot_ms[i] == pytest.approx(b["tpot"], abs=1e-6)
        assert list(v.itl_ms[v.itl_row == i]) == pytest.approx(b["itl"], abs=1e-6)
        assert list(v.itl_token_ms[v.itl_token_row == i]) == pytest.approx(b["tok"], abs=1e-6)
    worst = v.worst("itl_ms", len(table))
    for i, rec in enumerate(kept):
        gaps = _brute(rec)["itl"]
        assert (math.isnan(worst[i]) and not gaps) or worst[i] == pytest.approx(max(gaps), abs=1e-6)


def test_take_sort_shift_and_concat_keep_each_request_with_its_own_chunks() -> None:
    recs = _random_records(800, seed=11)
    table = Records.of(recs, T0)
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(table))[:300]
    for i, rec in zip(pick, table.take(pick), strict=True):
        _same(recs[i], rec)
    mask = table["replica"] == 2
    assert [r.replica for r in table.take(mask)] == [2] * int(mask.sum())
    # A contiguous run of rows (what the warm-up's end leaves) and a mask that picks every row: each
    # request still with its own chunks.
    for lo, hi in ((0, len(recs)), (37, 512), (799, 800)):
        run = np.zeros(len(table), bool)
        run[lo:hi] = True
        for picked in (table.take(run), table.take(np.arange(lo, hi))):
            assert len(picked) == hi - lo
            for a, b in zip(recs[lo:hi], picked, strict=True):
                _same(a, b)
    shuffled = table.take(rng.permutation(len(table)))
    for a, b in zip(recs, shuffled.sorted(), strict=True):
        _same(a, b)
    later = table.shifted(2.5)
    for a, b in zip(recs, later, strict=True):
        assert b.intended == pytest.approx(a.intended + 2.5, abs=1e-6)
        assert b.chunks == pytest.approx([c + 2.5 for c in a.chunks], abs=2e-6)
    # Two tables whose strings got different codes (each its own errors first) come together intact.
    first, second = Records.of(recs[:400], T0), Records.of(list(reversed(recs[400:])), T0 + 1.0)
    both = Records.concat([first, second]).sorted()
    expect = recs[:400] + recs[400:]
    for a, b in zip(expect, both, strict=True):
        assert b.error == a.error and b.op == a.op
    assert both.counts("error") == Records.of(recs).counts("error")


def test_a_parquet_file_of_many_batches_reads_back_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are filled a batch at a time: requests on either side of a batch's edge keep their fields,
    chunks and strings (each batch's codes from one dictionary)."""
    monkeypatch.setattr(record_files, "_BATCH", 64)
    recs = _random_records(1000, seed=5)
    write_parquet(tmp_path / "r.parquet", Records.of(recs, T0))
    back = read_parquet(tmp_path / "r.parquet")
    back.t0 = T0
    assert len(back) == len(recs)
    for a, b in zip(recs, back, strict=True):
        _same(a, b)


def test_old_json_lines_runs_still_read(tmp_path: Path) -> None:
    """A run written before Parquet (records.jsonl) reads as it did: ms after the start."""
    row = {"intended_ms": 500.0, "start_ms": 501.0, "end_ms": 700.0, "chunk_ms": [600.0, 650.0], "status": 200,
           "error": None, "prompt_tokens": 9, "output_tokens": 2, "tokens_from": "usage", "warmup": True,
           "items": 0, "bytes": 10, "op": ""}  # fmt: skip
    bad = row | {"chunk_ms": [], "error": "connect", "start_ms": None, "warmup": False}
    (tmp_path / "records.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(bad) + "\n")
    a, b = read_case(tmp_path)
    assert a.intended == pytest.approx(0.5) and a.warmup and a.chunks == pytest.approx([0.6, 0.65])
    assert a.first == pytest.approx(0.6) and a.output_tokens == 2 and a.tokens_from == "usage"
    assert b.error == "connect" and math.isnan(b.start)
    # ... and the export writes the same rows back
    write_jsonl(tmp_path / "again.jsonl", read_case(tmp_path))
    again = [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()]
    assert again[0]["chunk_ms"] == [600.0, 650.0] and again[1]["start_ms"] is None


def test_a_killed_runs_blocks_are_its_records(tmp_path: Path) -> None:
    """No records.parquet (the run never finished): the blocks it spilled are read, in order."""
    recs = _random_records(1000, seed=5)
    c = Collector(T0, Parts(tmp_path / record_files.PARTS / "run1"), block=128)
    for rec in recs[:900]:
        c.add(rec)  # 7 full blocks spilled; the 4 rows of the 8th were in memory when it was killed
    c.settle()
    back = read_case(tmp_path)
    assert len(back) == 896
    back.t0 = T0
    for a, b in zip(recs, back, strict=False):
        _same(a, b)


def test_parquet_is_readable_without_us_and_small(tmp_path: Path) -> None:
    """The file stands alone: pyarrow reads it with the documented columns; a non-streamed request
    takes under 40 bytes."""
    rng = random.Random(2)
    recs = []
    t = T0
    for _ in range(100_000):
        t += rng.expovariate(2000)
        rec = Record(t)
        rec.start = t + rng.random() * 0.0002
        rec.end = rec.start + 0.002 + rng.random() * 0.003
        rec.first, rec.status, rec.nbytes, rec.output_tokens = rec.end, 200, 612, 16
        rec.tokens_from = "usage"
        recs.append(rec)
    path = tmp_path / "r.parquet"
    write_parquet(path, Records.of(recs, T0))
    table = pq.read_table(path)
    assert table.column_names == [f.name for f in record_files.SCHEMA]
    assert table.column("end_us").to_pylist()[:3] == [round((r.end - T0) * 1e6) for r in recs[:3]]
    per_request = path.stat().st_size / len(recs)
    print(f"Parquet: {per_request:.1f} bytes per non-streamed request")
    assert per_request <= 40


def test_running_figures_agree_with_the_exact_ones_over_the_same_requests() -> None:
    """Live, folded a few rows at a time as a run hands them over, against the summary of every record: the
    same counts, and each percentile within HdrHistogram's 1 %."""
    from pytest_ubench.metrics import stats
    from pytest_ubench.metrics.live import LATENCIES, Live

    recs = _random_records(5000, seed=13)
    live = Live()
    c = Collector(T0, block=300)
    f = c.follow(lambda rows, chunks: live.fold(rows, chunks, list(c.codes["error"])))
    for i, rec in enumerate(recs):
        c.add(rec)
        if i % 97 == 0:
            c.catch_up(f)  # a progress tick now and then; blocks handed over in between
    table = c.finish()
    c.catch_up(f)
    exact = stats.summary(table.measured, 0.0, 1.0)
    got = live.figures(1.0)
    for k in ("total", "ok", "failed", "dropped", "errors"):
        assert got["requests"][k] == exact["requests"][k], k
    assert got["throughput"]["output_tokens"] == exact["throughput"]["output_tokens"]
    assert live.warmup == int(table["warmup"].sum())
    for m in LATENCIES:
        assert got["metrics"][m]["count"] == exact["metrics"][m]["count"], m
        for p in ("p50", "p90", "p99", "max"):
            want = exact["metrics"][m][p]
            assert got["metrics"][m][p] == pytest.approx(want, rel=0.01, abs=0.002), (m, p)
    # what another client process sends at a checkpoint: the same figures once added
    import pickle

    again = Live()
    again.add(pickle.loads(pickle.dumps(live)))
    assert again.figures(1.0) == got


def test_running_histograms_count_as_the_librarys_own_record_value() -> None:
    """Live adds a block's values to HdrHistogram's counts at once (its index formula, vectorised): the
    counts, total, min and max equal the library's own ``record_value`` one value at a time, over the whole
    range (powers of two and their neighbours, where a bucket changes)."""
    from pytest_ubench.metrics.live import _HIGHEST_US, _histogram, _record

    rng = np.random.default_rng(2)
    edges = np.concatenate([2 ** np.arange(0, 32), 2 ** np.arange(1, 32) - 1, 2 ** np.arange(1, 32) + 1])
    values = np.concatenate([rng.integers(1, _HIGHEST_US, 50_000), np.arange(1, 3000), edges[edges <= _HIGHEST_US]])
    one_by_one, at_once = _histogram(), _histogram()
    for v in values.tolist():
        one_by_one.record_value(v)
    _record(at_once, values.astype(np.float64))
    assert np.array_equal(np.ctypeslib.as_array(one_by_one.counts), np.ctypeslib.as_array(at_once.counts))
    assert (at_once.total_count, at_once.min_value, at_once.max_value) == (
        one_by_one.total_count,
        one_by_one.min_value,
        one_by_one.max_value,
    )
    assert at_once.get_value_at_percentile(99.9) == one_by_one.get_value_at_percentile(99.9)
