"""File storage measured by fio: the recipe's jobs become a job file, fio runs it (each job alone, for
the workload's duration after a ramp), and its JSON report becomes per-job bandwidth, IOPS and latency
percentiles in the results' ``ops`` part, where SLOs, reports and sweeps read them like any protocol's.

fio, not our engine, generates this load: it is the well-kept tool for the job (and how Lustre/GPFS
scratch is benchmarked on HPC), and our loop would only add Python between the test and the disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from time import time
from typing import Annotated, Any, Literal

from loguru import logger
from pydantic import Field, field_validator

from ..load.engine import Snapshot
from ..load.planning import Planned, ToolContext, ToolRun
from ..metrics import stats
from ..metrics.columns import Records
from ..metrics.files import write_atomic
from ..metrics.names import MIN_SAMPLES
from ..orchestrators import watchdog
from ..orchestrators.base import Endpoint, Orchestrator, ServiceError
from ..orchestrators.placeholders import expand
from ..recipes.fields import ByteSize, PositiveInt, Strict, parse_bytes
from ..recipes.registry import Part
from ..recipes.sweep import Case
from .base import BaseProtocol

FioOption = Annotated[str | int | float, Field(description="a fio option value on one line")]


class FioJob(Strict):
    """One fio job, run alone (``stonewall``) for the workload's duration after its warm-up (ramp)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]
    rw: Literal["read", "write", "randread", "randwrite", "rw", "randrw"]
    bs: ByteSize = "4KiB"
    size: ByteSize = "256MiB"  # per process: the file each of numjobs processes works on
    numjobs: PositiveInt | None = None  # default: workload.load.concurrency, so a concurrency list sweeps it
    iodepth: PositiveInt = 1
    rwmixread: Annotated[int, Field(ge=0, le=100)] | None = None  # rw/randrw: the read share, percent
    direct: bool = False  # O_DIRECT: bypass the page cache (what a parallel file system's figures need)
    options: dict[Annotated[str, Field(pattern=r"^[a-z_]+$")], FioOption] = Field(default_factory=dict)

    @field_validator("bs", "size")
    @classmethod
    def _sizes_parse(cls, v: object) -> object:
        parse_bytes(v)
        return v


class Fio(Strict):
    """``protocol: fio``: file storage measured by fio (jobs from the recipe, JSON output parsed into
    per-job bandwidth, IOPS and latency percentiles); no service is started."""

    directory: Annotated[str, Field(pattern=r"^[^\n\r:]+$")] = "{run_dir}/fio"  # placeholders and ${VAR}
    ioengine: Literal["psync", "sync", "libaio", "io_uring", "posixaio", "mmap"] = "psync"
    jobs: list[FioJob] = Field(min_length=1)
    options: dict[Annotated[str, Field(pattern=r"^[a-z_]+$")], FioOption] = Field(default_factory=dict)  # [global]
    keep_files: bool = False  # remove fio's data files after the run

    @field_validator("jobs")
    @classmethod
    def _unique_names(cls, v: list[FioJob]) -> list[FioJob]:
        names = [j.name for j in v]
        if len(set(names)) != len(names):
            raise ValueError(f"job names must be unique: {names}")
        return v

    @field_validator("options", mode="after")
    @classmethod
    def _one_line(cls, v: dict[str, object]) -> dict[str, object]:
        for key, value in v.items():
            if any(c in str(value) for c in "\n\r"):
                raise ValueError(f"option {key}: a value must be one line")
        return v


PERCENTILES = {"p50": "50.000000", "p90": "90.000000", "p95": "95.000000", "p99": "99.000000", "p99_9": "99.900000"}
GRACE_S = 60.0  # beyond the jobs' own time: fio's start and exit
LAYOUT_BYTES_PER_S = 50e6


class FioError(ServiceError):
    """fio could not run or its report is unreadable."""


@dataclass(frozen=True)
class FioRun:
    report: dict[str, Any]  # fio's JSON
    job_file: Path
    seconds: float  # the time the jobs were set to run (ramps included)
    interrupted: bool = False  # Ctrl-C: fio stopped and reported what it had measured


def binary() -> str:
    path = shutil.which("fio")
    if path is None:
        raise FioError("protocol fio needs the fio binary on PATH (Debian: apt install fio; HPC: module load fio)")
    return path


def _value(v: object) -> str:
    return str(int(v)) if isinstance(v, bool) else str(v)


def job_text(spec: Fio, directory: str, runtime_s: float, ramp_s: float, concurrency: int, tasks: bool = False) -> str:
    """The job file: values come from a validated recipe, one option per line, never through a shell.
    ``tasks``: run by several Slurm tasks at once, each on files of its own (fio expands the variable)."""
    lines = [
        "[global]",
        f"directory={directory}",
        *(["filename_format=$jobname.${SLURM_PROCID}.$jobnum.$filenum"] if tasks else []),
        f"ioengine={spec.ioengine}",
        "time_based=1",
        f"runtime={max(1, round(runtime_s * 1000))}ms",
        "group_reporting=1",
        "lat_percentiles=1",
        "percentile_list=" + ":".join(k.rstrip("0").rstrip(".") for k in PERCENTILES.values()),
    ]
    if ramp_s > 0:
        lines.append(f"ramp_time={round(ramp_s * 1000)}ms")
    lines += [f"{k}={_value(v)}" for k, v in spec.options.items()]
    for job in spec.jobs:
        lines += ["", f"[{job.name}]", "stonewall", f"rw={job.rw}", f"bs={parse_bytes(job.bs)}",
                  f"size={parse_bytes(job.size)}", f"numjobs={job.numjobs or concurrency}", f"iodepth={job.iodepth}",
                  f"direct={int(job.direct)}"]  # fmt: skip
        if job.rwmixread is not None:
            lines.append(f"rwmixread={job.rwmixread}")
        lines += [f"{k}={_value(v)}" for k, v in job.options.items()]
    return "\n".join(lines) + "\n"


def write_job(spec: Fio, directory: Path, run_dir: Path, text: str) -> Path:
    """``job.fio`` in the case's directory (the record of what ran), and fio's directory made."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FioError(f"workload.fio.directory: cannot create {directory}: {exc.strerror or exc}") from None
    job_file = run_dir / "job.fio"
    write_atomic(job_file, lambda fh: print(text, end="", file=fh))
    return job_file


def run(spec: Fio, directory: Path, run_dir: Path, runtime_s: float, ramp_s: float, concurrency: int) -> FioRun:
    """Run fio here to completion. Ctrl-C stops it; what it measured until then comes back marked
    ``interrupted`` (the caller writes it, then stops), or the interrupt goes on if fio wrote nothing."""
    exe = binary()
    job_file = write_job(spec, directory, run_dir, job_text(spec, str(directory), runtime_s, ramp_s, concurrency))
    out = run_dir / "fio.json"
    seconds = len(spec.jobs) * (runtime_s + ramp_s)
    # fio lays out its files before a job starts: allow for writing them at a slow 50 MB/s.
    seconds += sum(parse_bytes(j.size) * (j.numjobs or concurrency) for j in spec.jobs) / LAYOUT_BYTES_PER_S
    cmd = [exe, "--output-format=json", f"--output={out}", str(job_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    watchdog.guard_group(proc.pid)  # fio stops with the harness, even one killed with SIGKILL
    try:
        _, err = proc.communicate(timeout=seconds + GRACE_S)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise FioError(f"fio did not finish within {seconds + GRACE_S:.0f} s; stopped") from None
    except KeyboardInterrupt:
        _stop(proc)  # SIGINT: fio ends its jobs and writes its report
        if (partial := _read(out)) is None:
            raise
        return FioRun(partial, job_file, seconds, interrupted=True)
    finally:
        watchdog.release_group(proc.pid)
        if not spec.keep_files:
            remove_data_files(spec.jobs, directory)
    report = _read(out)
    if report is None:
        tail = err.decode(errors="replace").strip().splitlines()[-5:]
        raise FioError(f"fio exited with code {proc.returncode} and no report: {' | '.join(tail) or 'no message'}")
    return FioRun(report, job_file, seconds)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT first: fio then ends its jobs and writes its report; SIGKILL if it does not."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _read(path: Path) -> dict[str, Any] | None:
    """fio's JSON, or None; fio may print notes before the JSON object."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    start = text.find("{")
    if start < 0:
        return None
    try:
        report: dict[str, Any] = json.loads(text[start:])
    except json.JSONDecodeError:
        return None
    return report


def remove_data_files(jobs: list[FioJob], directory: Path) -> None:
    """fio names its files ``<job>.<process>.<file>`` (``<job>.<task>.<process>.<file>`` under Slurm):
    only those are removed, nothing else there."""
    names = {j.name for j in jobs if "filename" not in j.options}
    pattern = re.compile(r"(.+?)(?:\.\d+)?\.\d+\.\d+")
    with contextlib.suppress(OSError):
        for f in directory.iterdir():
            m = pattern.fullmatch(f.name)
            if m and m.group(1) in names and f.is_file():
                f.unlink(missing_ok=True)


def _latency(side: dict[str, Any]) -> dict[str, Any]:
    lat = side.get("lat_ns") or side.get("clat_ns") or {}
    n = int(lat.get("N", 0))
    out: dict[str, Any] = {"count": n}
    if n == 0:
        return out | dict.fromkeys(("mean", "min", *PERCENTILES, "max")) | {"under_sampled": list(MIN_SAMPLES)}
    pct = lat.get("percentile", {})
    out |= {"mean": lat["mean"] / 1e6, "min": lat["min"] / 1e6}
    out |= {name: (pct[key] / 1e6 if key in pct else None) for name, key in PERCENTILES.items()}
    out["max"] = lat["max"] / 1e6
    out["under_sampled"] = [name for name, need in MIN_SAMPLES.items() if n < need]
    return out


def ops(report: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Per job and direction (``<job>_read``, ``<job>_write``): rate, MB/s, latency; and each failed
    job's error (fio's errno, e.g. a full disk), so figures of the jobs that ran are kept."""
    out: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for job in report.get("jobs", []):
        name = job.get("jobname", "job")
        if job.get("error"):
            errno = int(job["error"])
            errors[name] = f"{os.strerror(errno)} (errno {errno})"
        for direction in ("read", "write", "trim"):
            side = job.get(direction) or {}
            if not side.get("total_ios"):
                continue
            seconds = side.get("runtime", 0) / 1000.0
            out[f"{name}_{direction}"] = {
                "total": int(side["total_ios"]),
                "ok": int(side["total_ios"]),
                "error_rate": 1.0 if name in errors else 0.0,
                "per_s": float(side["iops"]),
                "bytes_per_s": float(side["bw_bytes"]),
                "bytes": int(side["io_bytes"]),
                "seconds": seconds,
                "latency_ms": _latency(side),
            }
    return out, errors


def merge(per_task: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Operations of tasks that ran at once (Slurm tasks): counts, bytes, rates and IOPS add up; latency
    mean is weighted by count, min and max are exact. Percentiles cannot be merged from fio's summaries:
    each is the largest of the tasks' (an upper bound of the pooled percentile, since no task has more
    than its share above it), and ``latency_ms.percentiles`` says so."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted({n for ops in per_task for n in ops}):
        parts = [ops[name] for ops in per_task if name in ops]
        lats = [p["latency_ms"] for p in parts if p["latency_ms"]["count"]]
        n = sum(lat["count"] for lat in lats)
        latency: dict[str, Any] = {"count": n}
        if n:
            latency |= {"mean": sum(lat["mean"] * lat["count"] for lat in lats) / n,
                        "min": min(lat["min"] for lat in lats), "max": max(lat["max"] for lat in lats)}  # fmt: skip
            for stat in PERCENTILES:
                values = [lat[stat] for lat in lats if lat.get(stat) is not None]
                latency[stat] = max(values) if values else None
            latency["under_sampled"] = [name for name, need in MIN_SAMPLES.items() if n < need]
            latency["percentiles"] = f"upper bound: the largest of {len(lats)} tasks' percentiles"
        out[name] = {
            "total": sum(p["total"] for p in parts), "ok": sum(p["ok"] for p in parts),
            "error_rate": max(p["error_rate"] for p in parts), "per_s": sum(p["per_s"] for p in parts),
            "bytes_per_s": sum(p["bytes_per_s"] for p in parts), "bytes": sum(p["bytes"] for p in parts),
            "seconds": max(p["seconds"] for p in parts), "tasks": len(parts), "latency_ms": latency,
        }  # fmt: skip
    return out


def jobs_info(report: dict[str, Any]) -> list[dict[str, Any]]:
    """What each job was, as fio reports it (for the results)."""
    info = []
    for job in report.get("jobs", []):
        opts = job.get("job options", {})
        info.append({"name": job.get("jobname"), "error": job.get("error", 0), "usr_cpu": job.get("usr_cpu"),
                     "sys_cpu": job.get("sys_cpu"), **{k: opts[k] for k in ("rw", "bs", "size", "numjobs", "iodepth",
                                                                             "direct") if k in opts}})  # fmt: skip
    return info


# Each Slurm task's report is named by its rank; fio comes from the node's PATH (a profile's modules).
TASK = 'exec fio --output-format=json --output="$0/task-$SLURM_PROCID.json" "$1"'


def run_tasks(case: Case, job_file: Path, out_dir: Path, tasks: Orchestrator, ctx: ToolContext) -> list[dict[str, Any]]:
    """fio on a Slurm allocation: every client task (``clients.nodes`` x ``tasks_per_node``) runs the same
    job file at once against the shared directory, on files of its own, and writes its own JSON report
    (how a parallel file system's aggregate bandwidth is measured: from many nodes at once). Every task's
    report comes back; a task that wrote none is named in the error."""
    w = case.recipe.workload
    out_dir = out_dir.absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    total = w.warmup_s + w.duration_s

    def tick(elapsed: float) -> None:
        if ctx.progress is not None:
            ctx.progress(Snapshot(min(elapsed, total), total, 0, 0, 0, 0))

    command = ["sh", "-c", TASK, str(out_dir), str(job_file.absolute())]
    tasks.run_tasks(case.id, f"ubench-clients-{case.recipe.name}", w.clients, command, out_dir, tick)
    reports = []
    for rank in range(w.clients.nodes * w.clients.tasks_per_node):
        path = out_dir / f"task-{rank}.json"
        try:
            text = path.read_text(errors="replace")
            reports.append(json.loads(text[text.find("{") :]))
        except (OSError, ValueError) as exc:
            raise ServiceError(f"{case.id}: fio task {rank} wrote no report at {path}: {exc}") from None
    return reports


class FileStorage(BaseProtocol):
    """File storage: fio generates the load and measures it; its figures fill the ``ops`` part. Under
    ``orchestration: slurm`` every client task runs the jobs at once and their figures are merged."""

    names = ("fio",)
    rate_unit = "IOPS"
    part = Part("fio", Fio)
    needs_service = False

    def plan(self, case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
        return Planned(lambda ctx: self.run(case, ctx, duration_s), {"kind": "files", "prompts": 0})

    def run(self, case: Case, ctx: ToolContext, duration_s: float | None) -> ToolRun:
        w = case.recipe.workload
        spec = w.part_as(Fio)
        seconds = w.duration_s if duration_s is None else duration_s
        try:
            directory = Path(expand(spec.directory, {"run_dir": str(ctx.run_dir), **ctx.site}))
        except ServiceError as exc:
            raise ServiceError(f"{case.recipe.name}: workload.fio.directory: {exc}") from None
        wall_t0 = time()
        if ctx.tasks is not None:
            logger.info("{}: fio, {} job(s) in {} from every client task", case.id, len(spec.jobs), directory)
            text = job_text(spec, str(directory), seconds, w.warmup_s, case.concurrency, tasks=True)
            job_file = write_job(spec, directory, ctx.run_dir, text)
            try:
                reports = run_tasks(case, job_file, ctx.run_dir / "clients", ctx.tasks, ctx)
            finally:
                if not spec.keep_files:
                    remove_data_files(spec.jobs, directory)
            per_task = [ops(r) for r in reports]
            measured = merge([o for o, _ in per_task])
            errors = {f"{name} (task {i})": err for i, (_, errs) in enumerate(per_task) for name, err in errs.items()}
            command = ["srun", "fio", "--output-format=json", str(job_file)]
            report, aborted = reports[0], None
        else:
            logger.info("{}: fio, {} job(s) in {}", case.id, len(spec.jobs), directory)
            done = run(spec, directory, ctx.run_dir, seconds, w.warmup_s, case.concurrency)
            measured, errors = ops(done.report)
            job_file, report = done.job_file, done.report
            aborted = "interrupted" if done.interrupted else None
            command = [binary(), "--output-format=json", str(job_file)]
        summary = stats.summary(Records.empty(), 0.0, 0.0)
        total = sum(o["total"] for o in measured.values())
        busy = sum(o["seconds"] for o in measured.values())
        summary["requests"] |= {"total": total, "ok": total}
        moved = sum(o["bytes"] for o in measured.values())
        summary["throughput"] |= {"elapsed_s": busy, "requests_per_s": total / busy if busy else 0.0,
                                  "items_per_s": total / busy if busy else 0.0,
                                  "response_bytes_per_s": moved / busy if busy else 0.0}  # fmt: skip
        summary["ops"] = measured
        info = {"kind": "files", "prompts": 0, "directory": str(directory),
                "job_file": job_file.name, "fio_version": report.get("fio version"), "jobs": jobs_info(report),
                "tasks": w.clients.nodes * w.clients.tasks_per_node if ctx.tasks is not None else 1}  # fmt: skip
        failed = {f"fio job {name} ran": err for name, err in errors.items()}
        return ToolRun(summary, info, f"file://{directory}", command, failed, aborted, wall_t0, time())


FIO = FileStorage()
