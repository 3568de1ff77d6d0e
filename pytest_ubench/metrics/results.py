"""results.json: the published record of one case (schema in docs/results-schema.json), and the typed
``CaseResult`` every layer above hands around.

Files are written to a temporary name and renamed, so an interrupted run never leaves half a file,
and each case writes its own directory, so parallel workers never share a file.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from .slo import Verdict

SCHEMA_VERSION = "ubench.results/1"


class ResultsError(Exception):
    """Results could not be written (a full or read-only disk); CLI exit code 4."""


def default_output_root() -> Path:
    return Path("ubench-results") / datetime.now().strftime("%Y%m%d-%H%M%S")


def service_dir(root: Path, name: str) -> Path:
    """Where a service's script, log and endpoint file live in a results directory."""
    return root / "services" / name


@dataclass
class CaseResult:
    """One case's outcome: its results document (``result``, as written to results.json) and verdicts."""

    case_id: str
    run_dir: Path
    result: dict[str, Any]
    verdicts: list[Verdict]
    service_failure: str | None = None
    rate_unit: str = "ops/s"  # what throughput.items_per_s counts, as its protocol says

    @property
    def slo_passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    @property
    def passed(self) -> bool:
        return self.slo_passed and self.service_failure is None

    def failure_message(self) -> str:
        lines = [f"{self.case_id}: benchmark failed (results: {self.run_dir / 'results.json'})"]
        if self.service_failure:
            lines.append(self.service_failure)
        lines += ["  " + v.describe() for v in self.verdicts]
        return "\n".join(lines)

    def key_figures(self) -> str:
        return key_figures(self.result, self.rate_unit)


def key_figures(res: Mapping[str, Any], unit: str = "ops/s") -> str:
    """One line: what a reader looks at first (counts, latency percentiles, the rate, trust warnings);
    ``unit``: what ``items_per_s`` counts."""
    m, t, r = res["metrics"], res["throughput"], res["requests"]
    if res.get("ops") is not None and not m["e2e_ms"]["count"] and not r["failed"]:
        # No per-request records (a protocol measured by its own tool): its operations are the figures.
        ops = [f"{op} {o['per_s']:.0f} {unit} {o['bytes_per_s'] / 1e6:.1f} MB/s p99 {_ms(o['latency_ms']['p99'])} ms"
               for op, o in res["ops"].items()]  # fmt: skip
        return "; ".join(ops) or "no operation completed"

    def f(metric: str, stat: str) -> str:
        v = m[metric][stat]
        return "n/a" if v is None else f"{v:.1f}"

    if t.get("output_tokens"):
        rate = f"{t['output_tokens_per_s']:.1f} tok/s"
    elif t.get("items_per_s"):
        rate = f"{t['items_per_s']:.1f} {unit}"
    else:
        rate = f"{t.get('response_bytes_per_s', 0.0) / 1e6:.2f} MB/s"
    streamed = res["recipe"]["resolved"]["workload"]["stream"] or m["ttft_ms"]["count"]
    tokens = f"ttft p50 {f('ttft_ms', 'p50')} p95 {f('ttft_ms', 'p95')} ms, itl p50 {f('itl_ms', 'p50')} ms, "
    text = (
        f"{r['ok']}/{r['total']} ok, {tokens if streamed else ''}e2e p95 {f('e2e_ms', 'p95')} ms, "
        f"{t['requests_per_s']:.2f} req/s, {rate}"
    )
    if (rep := res.get("server_reported")) and rep.get("client_vs_server") is not None:
        text += f", server decode {rep['decode_tokens_per_s']:.0f} tok/s (client/server {rep['client_vs_server']:.2f})"
    if res.get("recall"):
        text += f", recall@k {res['recall']['mean']:.3f} (min {res['recall']['min']:.2f})"
    if "search" in res:
        text = f"{res['search']['note']}; at it: {text}"
    if r.get("dropped"):
        text += f", {r['dropped']} dropped"
    if "repeats" in res:
        cv = res["repeats"]["figures"].get("throughput.requests_per_s", {})
        text += f" [{res['repeats']['n']} runs, req/s CV {_pct(cv.get('cv'))} {cv.get('quality', '')}]"
    if res.get("steady_state") and res["steady_state"]["stable"] is False:
        text += " [never reached a steady state]"
    if (res.get("client") or {}).get("bottleneck"):
        text += " [load client likely the bottleneck: " + "; ".join(res["client"]["reasons"]) + "]"
    return text


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def provenance(tool_version: str, started: str, finished: str, command: list[str] | None) -> dict[str, Any]:
    return {
        "tool": "pytest-ubench",
        "tool_version": tool_version,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "started": started,
        "finished": finished,
        "service_command": command,
    }


def write_atomic(path: Path, write: Callable[[TextIO], None]) -> None:
    """Write through a temporary file and rename: readers see the old file or the whole new one.

    On failure (a full disk) the temporary file is removed, so no partial file is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    def put(fh: TextIO) -> None:
        fh.write(text)

    write_atomic(path, put)


def write_json(path: Path, obj: Any) -> None:
    def dump(fh: TextIO) -> None:
        json.dump(obj, fh, indent=2, allow_nan=False)
        fh.write("\n")

    write_atomic(path, dump)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
