"""A run's requests as columns: what the engine keeps while it runs and what every figure is computed from.

A request is a Python object (``Record``) only while it is in flight. When it finishes, ``Collector``
copies it into a row of fixed-width columns (88 bytes) and its chunks' arrival times into one flat
array (4 bytes each: microseconds after the request's intended send time), and the object is gone.
Full blocks of rows go to disk as the run goes (``record_files``), so memory stays flat for any
duration; the figures at the end are computed from all the columns, exactly (no sketch).

Times are seconds after the run's start (``t0``, a ``perf_counter`` reading while the run is live, 0.0
for records read from disk), rounded to the microsecond: the same values in memory and on disk.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from loguru import logger

from .records import NAN, Record

# One finished request. Times: seconds after t0, NaN where it never happened (a request never sent has
# no start); token counts -1 where unknown; error, op and tokens_from are codes into ``Records.names``.
ROW = np.dtype(
    [
        ("intended", "f8"),
        ("start", "f8"),
        ("first", "f8"),  # the first content-bearing chunk
        ("end", "f8"),
        ("nbytes", "i8"),  # response body bytes
        ("recall", "f8"),  # a share, kept exactly: its mean is compared with a brute force's
        ("prompt_tokens", "i4"),
        ("output_tokens", "i4"),
        ("items", "i4"),
        ("server_decode_s", "f4"),
        ("n_chunks", "u4"),  # content-bearing chunks: their times are in the flat chunk array
        ("n_chunk_tokens", "u4"),  # the server's token count at each chunk, where it says (0 otherwise)
        ("status", "i2"),
        ("error", "u2"),  # 0: succeeded
        ("op", "u2"),
        ("replica", "i2"),
        ("tokens_from", "u1"),
        ("warmup", "?"),
    ],
    align=True,
)
FIELDS: tuple[str, ...] = ROW.names or ()
TIMES = ("intended", "start", "first", "end")
CODED = ("error", "op", "tokens_from")  # strings, stored as codes; code 0 is None (error) or "" (the others)
BLOCK = 8192  # rows per block: what is spilled to disk at once


def _none_first(field: str) -> list[str | None]:
    return [None] if field == "error" else [""]


class Records:
    """A run's finished requests: one row each (``rows``), with their chunks' times (``chunk_us``, µs after
    each one's intended send, in row order) and the server's token counts at them (``chunk_tokens``)."""

    __slots__ = ("_chunk_off", "_token_off", "chunk_tokens", "chunk_us", "names", "rows", "t0")

    def __init__(
        self,
        rows: np.ndarray,
        chunk_us: np.ndarray,
        chunk_tokens: np.ndarray,
        names: Mapping[str, Sequence[str | None]],
        t0: float = 0.0,
    ) -> None:
        self.rows = rows
        self.chunk_us = chunk_us
        self.chunk_tokens = chunk_tokens
        self.names = {f: list(names.get(f) or _none_first(f)) for f in CODED}
        self.t0 = t0
        self._chunk_off: np.ndarray | None = None
        self._token_off: np.ndarray | None = None

    @classmethod
    def empty(cls, t0: float = 0.0) -> Records:
        return cls(np.empty(0, ROW), np.empty(0, np.uint32), np.empty(0, np.int32), {}, t0)

    @classmethod
    def of(cls, records: Iterable[Record], t0: float = 0.0) -> Records:
        """Records from objects (a file of the old JSON Lines format, a test's hand-made requests)."""
        c = Collector(t0)
        for rec in records:
            c.add(rec)
        return c.finish()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, field: str) -> np.ndarray:
        column: np.ndarray = self.rows[field]
        return column

    def __iter__(self) -> Iterator[Record]:
        """Each request as an object again (times back on the run's clock): for the odd few, never a whole
        long run."""
        t0 = self.t0
        off, toff = self.chunk_offsets(), self.token_offsets()
        names = self.names
        for i, row in enumerate(self.rows.tolist()):
            d = dict(zip(FIELDS, row, strict=True))
            rec = Record(d["intended"] + t0, d["warmup"])
            rec.start, rec.first, rec.end = d["start"] + t0, d["first"] + t0, d["end"] + t0
            base = d["intended"] + t0
            rec.chunks = [base + us / 1e6 for us in self.chunk_us[off[i] : off[i + 1]].tolist()]
            rec.chunk_tokens = self.chunk_tokens[toff[i] : toff[i + 1]].tolist()
            rec.status, rec.error = d["status"], names["error"][d["error"]]
            rec.prompt_tokens = None if d["prompt_tokens"] < 0 else d["prompt_tokens"]
            rec.output_tokens = None if d["output_tokens"] < 0 else d["output_tokens"]
            rec.tokens_from = names["tokens_from"][d["tokens_from"]] or ""
            rec.items, rec.nbytes, rec.op = d["items"], d["nbytes"], names["op"][d["op"]] or ""
            rec.recall, rec.server_decode_s, rec.replica = d["recall"], d["server_decode_s"], d["replica"]
            yield rec

    # -- what the figures read ------------------------------------------------------------------------

    @property
    def ok(self) -> np.ndarray:
        return self.rows["error"] == 0  # type: ignore[no-any-return]

    @property
    def measured(self) -> Records:
        return self.take(~self.rows["warmup"])

    def at(self, field: str) -> np.ndarray:
        """A time column on the run's own clock (``t0`` added): comparable with its windows."""
        column: np.ndarray = self.rows[field] + self.t0
        return column

    def code(self, field: str, name: str | None) -> int:
        """The code of a string in a coded column; -1 where no row has it."""
        try:
            return self.names[field].index(name)
        except ValueError:
            return -1

    def counts(self, field: str, where: np.ndarray | None = None) -> dict[str | None, int]:
        """How many rows have each string of a coded column (among ``where``)."""
        codes = self.rows[field] if where is None else self.rows[field][where]
        found = np.bincount(codes, minlength=len(self.names[field]))
        return {self.names[field][k]: int(n) for k, n in enumerate(found.tolist()) if n}

    def chunk_offsets(self) -> np.ndarray:
        """Where each row's chunks start in ``chunk_us`` (n + 1 entries)."""
        if self._chunk_off is None:
            self._chunk_off = _offsets(self.rows["n_chunks"])
        return self._chunk_off

    def token_offsets(self) -> np.ndarray:
        if self._token_off is None:
            self._token_off = _offsets(self.rows["n_chunk_tokens"])
        return self._token_off

    def chunk_row(self) -> np.ndarray:
        """The row of each entry of ``chunk_us``."""
        return np.repeat(np.arange(len(self.rows)), self.rows["n_chunks"])

    # -- new tables from this one ---------------------------------------------------------------------

    def take(self, which: np.ndarray) -> Records:
        """The rows a mask or an index array picks, with their chunks: the table itself when a mask picks
        every row (a table is never changed in place once made)."""
        if which.dtype == bool:
            if which.all():  # the usual case at 10M rows (every request measured, or ok): no copy at all
                return self
            idx = np.flatnonzero(which)
        else:
            idx = which
        if len(idx) and idx[-1] - idx[0] + 1 == len(idx) and (idx[1:] > idx[:-1]).all():
            return self._slice(int(idx[0]), int(idx[-1]) + 1)  # after the warm-up, say: a view, no copy
        rows = np.take(self.rows, idx)  # several times faster than fancy indexing on a structured array
        chunks, tokens = self.chunk_us, self.chunk_tokens  # none (a non-streamed run): nothing to pick
        if len(chunks):
            chunks = chunks[_segments(self.chunk_offsets(), idx)]
        if len(tokens):
            tokens = tokens[_segments(self.token_offsets(), idx)]
        return Records(rows, chunks, tokens, self.names, self.t0)

    def _slice(self, lo: int, hi: int) -> Records:
        chunks, tokens = self.chunk_us, self.chunk_tokens  # none (a non-streamed run): no offsets to count
        if len(chunks):
            c = self.chunk_offsets()
            chunks = chunks[c[lo] : c[hi]]
        if len(tokens):
            t = self.token_offsets()
            tokens = tokens[t[lo] : t[hi]]
        return Records(self.rows[lo:hi], chunks, tokens, self.names, self.t0)

    def sorted(self) -> Records:
        """In intended-send order (requests never sent last), as runs have always listed them."""
        key = np.where(np.isnan(self.rows["intended"]), np.inf, self.rows["intended"])
        order = np.argsort(key, kind="stable")
        if np.array_equal(order, np.arange(len(order))):
            return self
        return self.take(order)

    def shifted(self, seconds: float) -> Records:
        """The same requests on a clock ``seconds`` ahead (another client's, merged); chunks follow."""
        rows = self.rows.copy()
        for f in TIMES:
            rows[f] = np.rint((rows[f] + seconds) * 1e6) / 1e6
        return Records(rows, self.chunk_us, self.chunk_tokens, self.names, self.t0)

    @classmethod
    def concat(cls, parts: Sequence[Records], t0: float | None = None) -> Records:
        """One table from several, on the clock of ``t0`` (the first part's by default); each part's
        strings keep their meaning whatever their codes were."""
        if not parts:
            return cls.empty(t0 or 0.0)
        t0 = parts[0].t0 if t0 is None else t0
        names: dict[str, list[str | None]] = {f: _none_first(f) for f in CODED}
        rows = []
        for p in parts:
            r = p.rows if p.t0 == t0 else p.shifted(p.t0 - t0).rows
            r = r.copy() if r is p.rows else r
            for f in CODED:
                index = {n: k for k, n in enumerate(names[f])}
                remap = np.empty(len(p.names[f]), dtype=np.uint16)
                for k, n in enumerate(p.names[f]):
                    if n not in index:
                        index[n] = len(names[f])
                        names[f].append(n)
                    remap[k] = index[n]
                r[f] = remap[r[f]]
            rows.append(r)
        return cls(
            np.concatenate(rows),
            np.concatenate([p.chunk_us for p in parts]),
            np.concatenate([p.chunk_tokens for p in parts]),
            names,
            t0,
        )

    def values(self) -> Values:
        return Values.of(self)


def _offsets(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _segments(offsets: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The flat positions of rows ``idx``'s segments, in that order."""
    starts, ends = offsets[idx], offsets[idx + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    # Position p of the output belongs to segment s: start_s + (p - where segment s begins in the output).
    begins = np.cumsum(lengths) - lengths
    return np.repeat(starts - begins, lengths) + np.arange(total)


@dataclass(frozen=True)
class Values:
    """Per-request figures in ms, from the columns: NaN where a request has none (no first token, never
    sent). Gaps between chunks are flat, with the row each belongs to; ``itl_token_ms`` has one value per
    token after the first chunk's, where the server gave the token count at each chunk."""

    ttft_ms: np.ndarray
    tpot_ms: np.ndarray
    e2e_ms: np.ndarray
    send_lag_ms: np.ndarray
    itl_ms: np.ndarray
    itl_row: np.ndarray
    itl_token_ms: np.ndarray
    itl_token_row: np.ndarray

    @classmethod
    def of(cls, r: Records) -> Values:
        rows = r.rows
        intended = rows["intended"]
        e2e = (rows["end"] - intended) * 1000.0
        ttft = (rows["first"] - intended) * 1000.0
        out = rows["output_tokens"].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(out > 1, (e2e - ttft) / (out - 1), NAN)
        lag = (rows["start"] - intended) * 1000.0
        # Gaps: between consecutive chunks of one row (a row's first chunk opens no gap).
        off = r.chunk_offsets()
        us = r.chunk_us.astype(np.int64)
        owner = r.chunk_row()
        same = owner[1:] == owner[:-1]
        gaps = (np.diff(us) / 1000.0)[same]
        gap_row = owner[1:][same]
        # Per token: rows whose every chunk has the server's count; a gap over k tokens counts k times, each
        # gap / k (a chunk that adds no token adds no value).
        n, nt = rows["n_chunks"], rows["n_chunk_tokens"]
        has = (nt == n) & (n > 0)
        tok_ms, tok_row = np.empty(0), np.empty(0, dtype=np.int64)
        if has.any():
            aligned = np.full(len(us), -1, dtype=np.int64)
            which = np.flatnonzero(has)
            aligned[_segments(off, which)] = r.chunk_tokens[_segments(r.token_offsets(), which)]
            dk = np.diff(aligned)[same]
            valid = (aligned[1:][same] >= 0) & (aligned[:-1][same] >= 0) & (dk > 0)
            dk, g, gr = dk[valid], gaps[valid], gap_row[valid]
            tok_ms, tok_row = np.repeat(g / dk, dk), np.repeat(gr, dk)
        return cls(ttft, tpot, e2e, lag, gaps, gap_row, tok_ms, tok_row)

    def series(self, name: str) -> np.ndarray:
        """One metric's values over the requests (flat gaps for the ITLs), NaNs left out."""
        v: np.ndarray = getattr(self, name)
        return v[~np.isnan(v)] if v.dtype.kind == "f" else v

    def worst(self, name: str, n: int) -> np.ndarray:
        """Each of ``n`` requests' value, the largest gap for an ITL (NaN where a request has none)."""
        if name not in ("itl_ms", "itl_token_ms"):
            return getattr(self, name)  # type: ignore[no-any-return]
        rows = self.itl_row if name == "itl_ms" else self.itl_token_row
        out = np.full(n, -np.inf)
        np.maximum.at(out, rows, getattr(self, name))
        out[out == -np.inf] = NAN
        return out


class _Flat:
    """A flat array filled a request at a time: one buffer, grown by doubling, emptied at each block."""

    def __init__(self, dtype: type[np.generic], capacity: int) -> None:
        self.buf = np.empty(capacity, dtype)
        self.n = 0

    def extend(self, values: np.ndarray) -> None:
        end = self.n + len(values)
        if end > len(self.buf):
            grown = np.empty(max(end, 2 * len(self.buf)), self.buf.dtype)
            grown[: self.n] = self.buf[: self.n]
            self.buf = grown
        self.buf[self.n : end] = values
        self.n = end

    def take(self) -> np.ndarray:
        out = self.buf[: self.n].copy()
        self.n = 0
        return out


class Spill(Protocol):
    """Where full blocks go during a run (``record_files.Parts``), and are read back from at its end."""

    def write(self, part: Records) -> None: ...

    def read(self) -> Records: ...


class Follower:
    """A reader of a collector's rows as they come (a live view, an exporter): each row reaches ``fold``
    exactly once, with the chunk times of those rows."""

    def __init__(self, fold: Callable[[np.ndarray, np.ndarray], None]) -> None:
        self.fold = fold
        self.seen = 0  # rows of the current block already folded


class Collector:
    """Takes each finished request into a block of rows; a full block goes to ``spill`` (to disk, in a
    thread of its own so the load's loop never waits on the disk) or, with none, stays in memory. Per
    request: one row assignment and, for a streamed one, its chunk times copied into one flat array; no
    Python object outlives its request."""

    def __init__(self, t0: float, spill: Spill | None = None, block: int = BLOCK) -> None:
        self.t0 = t0
        self.spill = spill
        self.block = np.zeros(block, ROW)
        self.n = 0  # rows in the current block
        self.codes: dict[str, dict[str | None, int]] = {f: {n: 0 for n in _none_first(f)} for f in CODED}
        self._chunks = _Flat(np.uint32, block * 4)
        self._tokens = _Flat(np.int32, 0)
        self._kept: list[Records] = []
        self.spilled = 0  # blocks on disk
        self.spill_error: str | None = None
        self._writer = ThreadPoolExecutor(1, "ubench-spill") if spill is not None else None
        # Followers may read from other threads (the exporter's): they read under ``lock``, which a block
        # also holds while it is handed over, so none is recycled under a reader.
        self.lock = threading.Lock()
        self.followers: list[Follower] = []

    def _code(self, field: str, name: str | None) -> int:
        table = self.codes[field]
        code = table.get(name)
        if code is None:
            code = table[name] = len(table)
        return code

    def add(self, rec: Record) -> None:
        t0, base = self.t0, rec.intended
        chunks, tokens = rec.chunks, rec.chunk_tokens
        err = 0 if rec.error is None else self._code("error", rec.error)
        self.block[self.n] = (
            base - t0, rec.start - t0, rec.first - t0, rec.end - t0, rec.nbytes, rec.recall,
            -1 if rec.prompt_tokens is None else rec.prompt_tokens,
            -1 if rec.output_tokens is None else rec.output_tokens,
            rec.items, rec.server_decode_s, len(chunks), len(tokens), rec.status, err,
            self._code("op", rec.op or ""), rec.replica, self._code("tokens_from", rec.tokens_from or ""), rec.warmup,
        )  # fmt: skip
        if chunks:
            # µs after the intended send: 4 bytes, enough for 71 minutes (and never below 0)
            at = np.asarray(chunks)
            at -= base
            at *= 1e6
            self._chunks.extend(np.clip(np.rint(at, out=at), 0, 4294967295, out=at))
        if tokens:
            self._tokens.extend(np.asarray(tokens))
        self.n += 1  # last: a reader in another thread sees a row only once it is whole
        if self.n == len(self.block):
            self._flush()

    def follow(self, fold: Callable[[np.ndarray, np.ndarray], None]) -> Follower:
        """A new reader, from the first row of the block being filled (readers attach as a run starts)."""
        follower = Follower(fold)
        with self.lock:
            self.followers.append(follower)
        return follower

    def unfollow(self, follower: Follower) -> None:
        with self.lock:
            self.followers.remove(follower)

    def catch_up(self, follower: Follower) -> None:
        """Hand a reader the rows it has not seen."""
        with self.lock:
            self._catch_up(follower)

    def _catch_up(self, follower: Follower) -> None:
        end = self.n  # read once: rows below it are whole
        if follower.seen < end:
            n_chunks = self.block["n_chunks"]
            lo = int(n_chunks[: follower.seen].sum())
            hi = lo + int(n_chunks[follower.seen : end].sum())
            follower.fold(self.block[follower.seen : end], self._chunks.buf[lo:hi])
            follower.seen = end

    def spill_now(self) -> None:
        """The rows so far to disk, whether or not the block is full (a checkpoint: a killed run loses at
        most what finished since)."""
        if self.spill is not None:
            self._flush()

    def settle(self) -> None:
        """Wait until every block handed to the disk is written (or kept, the disk refusing it)."""
        if self._writer is not None:
            self._writer.submit(lambda: None).result()

    def _flush(self, last: bool = False) -> None:
        """The current block out: to disk, or kept. The last one of a run is kept (it is read back at once)."""
        if not self.n:
            return
        with self.lock:
            for follower in self.followers:
                self._catch_up(follower)
                follower.seen = 0
            rows = self.block[: self.n].copy()
            chunks, tokens = self._chunks.take(), self._tokens.take()
            self.n = 0
        for f in TIMES:
            rows[f] = np.rint(rows[f] * 1e6) / 1e6
        names = {f: list(self.codes[f]) for f in CODED}
        part = Records(rows, chunks, tokens, names, self.t0)
        if self._writer is not None and not last:
            self._writer.submit(self._write, part)
        else:
            self._kept.append(part)

    def _write(self, part: Records) -> None:
        """In the spill thread. A disk that refuses a block (full) keeps it, and the rest, in memory:
        nothing taken is lost, and the run goes on."""
        assert self.spill is not None
        if self.spill_error is None:
            try:
                self.spill.write(part)
                self.spilled += 1
                return
            except OSError as exc:
                self.spill_error = f"records kept in memory from here on: cannot write a block ({exc})"
                logger.warning(self.spill_error)
        self._kept.append(part)

    def finish(self) -> Records:
        """Every request taken, in intended-send order: the blocks spilled (read back) and those kept."""
        self._flush(last=True)
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        parts = list(self._kept)
        if self.spill is not None and self.spilled:
            on_disk = self.spill.read()
            on_disk.t0 = self.t0  # its times were written after this run's start, as every block's are
            parts.insert(0, on_disk)
        return Records.concat(parts, self.t0).sorted()
