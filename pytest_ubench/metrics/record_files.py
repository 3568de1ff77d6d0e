"""Records on disk: Parquet (the format runs write, schema in docs/records.md), the blocks a run spills as
it goes, and the JSON Lines of runs written before Parquet (still read) and of ``ubenchai records``.

In a file, times are integer microseconds after the run's start, absent (null) where a request has none;
each chunk's time is microseconds after its request's intended send. The run's own facts (its start on
the wall clock, the case) are in the file's key-value metadata under ``ubench``.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .columns import ROW, TIMES, Records
from .files import write_atomic
from .records import Record

FORMAT = "ubench.records/1"
PARQUET = "records.parquet"
JSONL = "records.jsonl"  # runs written before Parquet
PARTS = "records.parts"  # blocks spilled during a run; gone once its records.parquet is written
META_KEY = b"ubench"

SCHEMA = pa.schema(
    [
        pa.field("intended_us", pa.int64(), nullable=False),
        pa.field("start_us", pa.int64()),
        pa.field("first_us", pa.int64()),
        pa.field("end_us", pa.int64()),
        pa.field("chunk_us", pa.list_(pa.uint32())),
        pa.field("chunk_tokens", pa.list_(pa.int32())),
        pa.field("status", pa.int16(), nullable=False),
        pa.field("error", pa.dictionary(pa.int16(), pa.string())),
        pa.field("op", pa.dictionary(pa.int16(), pa.string())),
        pa.field("tokens_from", pa.dictionary(pa.int16(), pa.string())),
        pa.field("warmup", pa.bool_(), nullable=False),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("output_tokens", pa.int32()),
        pa.field("items", pa.int32(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("recall", pa.float64()),
        pa.field("server_decode_s", pa.float32()),
        pa.field("replica", pa.int16(), nullable=False),
    ]
)
# Times and the chunks' offsets compress best as deltas; the few distinct strings as dictionaries.
_DELTA = ["intended_us", "start_us", "first_us", "end_us", "chunk_us.list.element"]
_DICTIONARY = ["error", "op", "tokens_from"]


class RecordsError(Exception):
    """A records file that cannot be read (not ours, cut short, another schema)."""


def to_arrow(r: Records, meta: Mapping[str, Any] | None = None) -> pa.Table:
    rows = r.rows

    def us(field: str) -> pa.Array:
        v = rows[field]
        missing = np.isnan(v)
        return pa.array(np.rint(np.where(missing, 0.0, v) * 1e6).astype(np.int64), mask=missing)

    def listed(values: np.ndarray, counts: np.ndarray, absent: np.ndarray | None) -> pa.Array:
        off = np.zeros(len(counts) + 1, dtype=np.int32)
        np.cumsum(counts, out=off[1:])
        return pa.ListArray.from_arrays(
            pa.array(off), pa.array(values), mask=pa.array(absent) if absent is not None else None
        )

    def coded(field: str, none_is_null: bool) -> pa.Array:
        names = r.names[field]
        codes = rows[field].astype(np.int16)
        mask = codes == 0 if none_is_null else None
        return pa.DictionaryArray.from_arrays(
            pa.array(codes, mask=mask), pa.array([n if n is not None else "" for n in names], pa.string())
        )

    def nullable(field: str, missing: np.ndarray) -> pa.Array:
        return pa.array(rows[field], mask=missing)

    n_tok = rows["n_chunk_tokens"]
    columns = [
        us("intended"),
        us("start"),
        us("first"),
        us("end"),
        listed(r.chunk_us, rows["n_chunks"], None),
        listed(r.chunk_tokens, n_tok, n_tok == 0),
        pa.array(rows["status"]),
        coded("error", True),
        coded("op", False),
        coded("tokens_from", False),
        pa.array(rows["warmup"]),
        nullable("prompt_tokens", rows["prompt_tokens"] < 0),
        nullable("output_tokens", rows["output_tokens"] < 0),
        pa.array(rows["items"]),
        pa.array(rows["nbytes"]),
        nullable("recall", np.isnan(rows["recall"])),
        nullable("server_decode_s", np.isnan(rows["server_decode_s"])),
        pa.array(rows["replica"]),
    ]
    table = pa.Table.from_arrays(columns, schema=SCHEMA)
    return table.replace_schema_metadata({META_KEY: json.dumps({"format": FORMAT, **(meta or {})}).encode()})


def from_arrow(table: pa.Table) -> Records:
    missing = [f.name for f in SCHEMA if f.name not in table.column_names]
    if missing:
        raise RecordsError(f"not a records table: no column {', '.join(missing)}")
    rows = np.zeros(table.num_rows, ROW)
    names: dict[str, list[str | None]] = {}
    codes: dict[str, np.ndarray] = {}
    for field in ("error", "op", "tokens_from"):  # whole columns: one dictionary for every batch
        codes[field], names[field] = _codes(table.column(field).combine_chunks(), field == "error")
    lo = 0
    for batch in table.to_batches(max_chunksize=_BATCH):
        hi = lo + batch.num_rows
        part = rows[lo:hi]
        _fill(part, batch)
        for field, coded in codes.items():
            part[field] = coded[lo:hi]
        lo = hi
    chunk_col, token_col = table.column("chunk_us"), table.column("chunk_tokens")
    return Records(
        rows,
        _flat(chunk_col).astype(np.uint32, copy=False),
        _flat(token_col).astype(np.int32, copy=False),
        names,
        0.0,
    )


# Rows are filled a batch at a time: one column after another over a block that stays in the CPU's cache
# (a whole 10M-row table, field after field, is 17 passes over 880 MB; this is one).
_BATCH = 1 << 15


def _fill(part: np.ndarray, batch: pa.RecordBatch) -> None:
    def plain(name: str, fill: float | int) -> np.ndarray:
        values: np.ndarray = batch.column(name).fill_null(fill).to_numpy(zero_copy_only=False)
        return values

    for field in TIMES:  # int64 µs, null where none: pyarrow gives float64 with NaN (exact below 2**53)
        part[field] = batch.column(f"{field}_us").to_numpy(zero_copy_only=False) / 1e6
    part["n_chunks"] = batch.column("chunk_us").value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    part["n_chunk_tokens"] = batch.column("chunk_tokens").value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    part["status"] = plain("status", 0)
    part["warmup"] = plain("warmup", False)
    part["prompt_tokens"] = plain("prompt_tokens", -1)
    part["output_tokens"] = plain("output_tokens", -1)
    part["items"] = plain("items", 0)
    part["nbytes"] = plain("bytes", 0)
    part["recall"] = plain("recall", np.nan)
    part["server_decode_s"] = plain("server_decode_s", np.nan)
    part["replica"] = plain("replica", 0)


def _flat(column: pa.ChunkedArray) -> np.ndarray:
    values: np.ndarray = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return values


def _codes(arr: pa.Array, none_is_null: bool) -> tuple[np.ndarray, list[str | None]]:
    """A string column as codes with code 0 the empty value (None for errors)."""
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    dictionary = arr.dictionary.to_pylist()
    names: list[str | None] = [None if none_is_null else ""]
    remap = np.zeros(len(dictionary) + 1, dtype=np.uint16)  # last slot: null
    for k, name in enumerate(dictionary):
        if name in (None, "") and not (none_is_null and name == ""):
            continue
        if name not in names:
            names.append(name)
        remap[k] = names.index(name)
    indices = arr.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False)
    return remap[indices], names


def write_parquet(path: Path, records: Records, meta: Mapping[str, Any] | None = None) -> None:
    """Atomically, like every file of a run: a reader never sees half of one."""
    table = to_arrow(records, meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    try:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            use_dictionary=_DICTIONARY,
            column_encoding=dict.fromkeys(_DELTA, "DELTA_BINARY_PACKED"),
            write_statistics=False,
        )
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_parquet(path: Path) -> Records:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise RecordsError(f"{path}: not a readable Parquet file: {exc}") from None
    try:
        return from_arrow(table)
    except RecordsError as exc:
        raise RecordsError(f"{path}: {exc}") from None


def metadata(path: Path) -> dict[str, Any]:
    """The run's facts written with its records (empty for a file without them)."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(META_KEY)
    return dict(json.loads(raw)) if raw else {}


class Parts:
    """A run's blocks on disk as it goes (one Parquet file each, written atomically): what a killed run
    leaves. Several client processes share the directory, each with its own ``prefix``."""

    def __init__(self, directory: Path, prefix: str = "part") -> None:
        self.dir = directory
        self.prefix = prefix
        self.seq = 0
        for stale in directory.glob(f"{prefix}-*.parquet"):  # an earlier run's here (a search's probes)
            stale.unlink()

    def write(self, part: Records) -> None:
        write_parquet(self.dir / f"{self.prefix}-{self.seq:06d}.parquet", part)
        self.seq += 1

    def read(self) -> Records:
        """This writer's blocks, in order."""
        return _read_all(self.dir.glob(f"{self.prefix}-*.parquet"))


def _read_all(files: Iterable[Path]) -> Records:
    return Records.concat([read_parquet(f) for f in sorted(files)], 0.0)


def keep(case_dir: Path, records: Records, meta: Mapping[str, Any]) -> None:
    """A finished run's records as its one Parquet file; the blocks spilled on the way are then gone."""
    write_parquet(case_dir / PARQUET, records, meta)
    shutil.rmtree(case_dir / PARTS, ignore_errors=True)


SOURCES = (PARQUET, PARTS, JSONL)  # where a case's records are, in the order they are looked for


def has_records(case_dir: Path) -> bool:
    return any((case_dir / name).exists() for name in SOURCES)


def read_case(case_dir: Path) -> Records:
    """A case's records: its Parquet file, else the blocks its run left (killed; each repeat's in its own
    folder, in intended-send order), else JSON Lines (runs written before Parquet); none when there is
    nothing."""
    if (path := case_dir / PARQUET).exists():
        return read_parquet(path)
    if (parts := case_dir / PARTS).is_dir():
        return _read_all(parts.rglob("*.parquet")).sorted()
    if (path := case_dir / JSONL).exists():
        return Records.of(read_jsonl(path))
    return Records.empty()


# -- JSON Lines: the old format, and an export for tools that want text --------------------------------


def _row(rec: Record, t0: float) -> dict[str, Any]:
    def ms(t: float) -> float | None:
        return None if t != t else round((t - t0) * 1000.0, 4)

    row: dict[str, Any] = {
        "intended_ms": ms(rec.intended),
        "start_ms": ms(rec.start),
        "end_ms": ms(rec.end),
        "chunk_ms": [ms(c) for c in rec.chunks],
        "status": rec.status,
        "error": rec.error,
        "prompt_tokens": rec.prompt_tokens,
        "output_tokens": rec.output_tokens,
        "tokens_from": rec.tokens_from,
        "warmup": rec.warmup,
        "items": rec.items,
        "bytes": rec.nbytes,
        "op": rec.op,
    }
    if rec.chunk_tokens:
        row["chunk_tokens"] = rec.chunk_tokens
    if rec.recall == rec.recall:
        row["recall"] = round(float(rec.recall), 6)
    if rec.server_decode_s == rec.server_decode_s:
        row["server_decode_ms"] = round(float(rec.server_decode_s) * 1000.0, 4)
    if rec.replica:
        row["replica"] = rec.replica
    return row


def _record(row: dict[str, Any]) -> Record:
    def s(v: float | None) -> float:
        return float("nan") if v is None else v / 1000.0

    rec = Record(s(row["intended_ms"]), row.get("warmup", False))
    rec.start, rec.end = s(row["start_ms"]), s(row["end_ms"])
    rec.chunks = [s(c) for c in row["chunk_ms"]]
    rec.chunk_tokens = row.get("chunk_tokens", [])
    rec.first = rec.chunks[0] if rec.chunks else float("nan")
    rec.status, rec.error = row["status"], row["error"]
    rec.prompt_tokens, rec.output_tokens = row["prompt_tokens"], row["output_tokens"]
    rec.tokens_from = row["tokens_from"]
    rec.items, rec.nbytes, rec.op = row.get("items", 0), row.get("bytes", 0), row.get("op", "")
    rec.recall = row.get("recall", float("nan"))
    rec.server_decode_s = row["server_decode_ms"] / 1000.0 if "server_decode_ms" in row else float("nan")
    rec.replica = row.get("replica", 0)
    return rec


def read_jsonl(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield _record(json.loads(line))


def write_jsonl(path: Path, records: Records) -> None:
    def dump(fh: TextIO) -> None:
        for rec in records:
            fh.write(json.dumps(_row(rec, records.t0), separators=(",", ":")))
            fh.write("\n")

    write_atomic(path, dump)


def write_csv(path: Path, records: Records) -> None:
    """One line per request, Parquet's columns (a chunk list as its values joined by spaces)."""
    table = to_arrow(records)

    def dump(fh: TextIO) -> None:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(table.column_names)
        for batch in table.to_batches(65536):
            cols = [c.to_pylist() for c in batch.columns]
            for row in zip(*cols, strict=True):
                out.writerow(" ".join(map(str, v)) if isinstance(v, list) else "" if v is None else v for v in row)

    write_atomic(path, dump)
