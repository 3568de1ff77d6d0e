"""A run's records on disk, against the truth server's own log of what it served: the Parquet file as pandas,
polars and DuckDB read it (the lines docs/records.md gives), ``ubenchai records`` to JSON Lines and CSV and
back, and a run written before Parquet (records.jsonl) still reported."""

from __future__ import annotations

import csv
import json
import shutil
import urllib.request
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pytest
from helpers import truth_recipe, ubenchai

from pytest_ubench.metrics import record_files


@pytest.fixture
def run_dir(truth_server, write_recipe, tmp_path: Path) -> tuple[Path, list[dict]]:
    """One case against a truth server: its results directory and the server's account of every request."""
    dep = truth_server("--ttft-ms", "3", "--itl-ms", "1")
    recipe = truth_recipe("rec", dataset={"prompt_tokens": 16, "output_tokens": 12, "prompts": 8},
                          load={"mode": "closed", "concurrency": 3}, duration_s=1.5, warmup_s=0.3)  # fmt: skip
    recipe["service"] = {"url": dep.endpoint.url}
    res = ubenchai("client", "run", "--recipe", str(write_recipe(recipe)), "--output", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    truth = json.load(urllib.request.urlopen(dep.endpoint.url + "/truth"))
    return tmp_path / "out", truth


def test_parquet_reads_in_one_line_with_pandas_polars_and_duckdb(run_dir: tuple[Path, list[dict]]) -> None:
    out, truth = run_dir
    path = out / "rec-concurrency=3" / "records.parquet"
    served, chunks = len(truth), sum(len(t["writes"]) for t in truth)  # the server's count, one write a token
    df = pd.read_parquet(path)
    assert len(df) == served and int(df.chunk_us.map(len).sum()) == chunks and df.error.isna().all()
    assert pl.read_parquet(path).height == served
    ((n, c),) = duckdb.sql(f"SELECT count(*), sum(len(chunk_us)) FROM '{path}'").fetchall()
    assert (n, c) == (served, chunks)
    # the run's figures came from these same rows: its measured requests are the rows not in warm-up
    result = json.loads((path.parent / "results.json").read_text())
    assert result["requests"]["total"] == int((~df.warmup).sum()) and result["records_file"] == "records.parquet"
    meta = record_files.metadata(path)
    assert meta["format"] == "ubench.records/1" and meta["case_id"] == "rec-concurrency=3"


def test_records_convert_to_json_lines_and_csv_and_back(run_dir: tuple[Path, list[dict]], tmp_path: Path) -> None:
    out, truth = run_dir
    res = ubenchai("records", str(out), "--format", "jsonl")
    assert res.returncode == 0, res.stderr
    case = out / "rec-concurrency=3"
    rows = [json.loads(line) for line in (case / "records.jsonl").read_text().splitlines()]
    assert len(rows) == len(truth) and sum(len(r["chunk_ms"]) for r in rows) == sum(len(t["writes"]) for t in truth)
    res = ubenchai("records", str(case), "--format", "csv", "--output", str(tmp_path / "csv"))
    assert res.returncode == 0, res.stderr
    with (tmp_path / "csv" / "rec-concurrency=3.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(truth) and list(table[0]) == [f.name for f in record_files.SCHEMA]
    # A run written before Parquet: its JSON Lines alone, reported and converted
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / case.name / "records.parquet").unlink()
    report = ubenchai("report", str(old))
    assert report.returncode == 0, report.stderr
    assert "Latency distributions" in (old / "report.html").read_text()  # drawn from the old records
    res = ubenchai("records", str(old), "--format", "parquet")
    assert res.returncode == 0, res.stderr
    assert len(pd.read_parquet(old / case.name / "records.parquet")) == len(truth)


def test_no_records_is_a_usage_error_naming_the_place(tmp_path: Path) -> None:
    res = ubenchai("records", str(tmp_path / "nowhere"), "--format", "csv")
    said = f"no records (records.parquet, records.jsonl or records.parts/) under {tmp_path / 'nowhere'}"
    assert res.returncode == 2 and said in res.stderr and "Traceback" not in res.stderr
