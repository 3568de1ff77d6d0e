"""A run's results directory and what is in it: the one reader and writer of it.

Layout: ``<root>/<case id>/results.json`` (the published record of one case, schema in
docs/results-schema.json) beside ``records.parquet`` (its raw requests, docs/records.md); ``<root>/services/<name>/`` (a
service's script, log and endpoint file); ``<root>/sweeps/`` (capacity summaries). Every case writes its
own directory (parallel workers never share a file), every file atomically (``files``).
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .columns import Records
from .files import read_json, write_json
from .record_files import PARQUET, keep, read_case
from .slo import Verdict

SCHEMA_VERSION = "ubench.results/1"
RESULTS = "results.json"
RECORDS = PARQUET


class ResultsError(Exception):
    """Results could not be written (a full or read-only disk); CLI exit code 4."""


def default_output_root() -> Path:
    return Path("ubench-results") / datetime.now().strftime("%Y%m%d-%H%M%S")


@dataclass
class CaseResult:
    """One case's outcome: its results document (``result``, as written to results.json) and verdicts."""

    case_id: str
    run_dir: Path
    result: dict[str, Any]
    verdicts: list[Verdict]
    service_failure: str | None = None
    rate_unit: str = "ops/s"  # what throughput.items_per_s counts, as its protocol says
    _records: Records | None = field(default=None, repr=False, compare=False)

    @classmethod
    def read(cls, case_dir: Path) -> CaseResult:
        """A case written earlier (``ResultsDir.write``), with its verdicts as they were judged."""
        doc: dict[str, Any] = read_json(case_dir / RESULTS)
        verdicts = [Verdict(v["expression"], v["measured"], v["allowed"], v["passed"], v.get("note") or "")
                    for v in doc.get("slo", [])]  # fmt: skip
        return cls(doc["case_id"], case_dir, doc, verdicts, doc.get("service_failure"))

    @property
    def results_file(self) -> Path:
        return self.run_dir / RESULTS

    @property
    def recipe_name(self) -> str:
        name: str = self.result["recipe"]["name"]
        return name

    def records(self) -> Records:
        """The case's requests, read once (none when there is no file)."""
        if self._records is None:
            self._records = read_case(self.run_dir)
        return self._records

    @property
    def slo_passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    @property
    def passed(self) -> bool:
        return self.slo_passed and self.service_failure is None

    def failure_message(self) -> str:
        lines = [f"{self.case_id}: benchmark failed (results: {self.run_dir / RESULTS})"]
        if self.service_failure:
            lines.append(self.service_failure)
        lines += ["  " + v.describe() for v in self.verdicts]
        return "\n".join(lines)

    def key_figures(self) -> str:
        return key_figures(self.result, self.rate_unit)


def flat_figures(res: Mapping[str, Any]) -> dict[str, float | bool]:
    """Every figure a case of any protocol has, as flat dotted names (``ttft_ms.p95``,
    ``ops.GET.per_s``, ``recall.mean``): what JUnit properties and pytest-benchmark's ``extra_info`` carry,
    where a nested document cannot go. Figures a protocol does not have are left out, not zero."""
    m, t, r = res["metrics"], res["throughput"], res["requests"]
    out: dict[str, float | bool] = {"passed": bool(res.get("passed")), "error_rate": r["error_rate"]}
    for metric in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"):
        if m.get(metric, {}).get("count"):
            out |= {f"{metric}.{stat}": m[metric][stat] for stat in ("p50", "p95", "p99")}
    out["requests_per_s"] = t["requests_per_s"]
    for rate in ("output_tokens_per_s", "items_per_s", "response_bytes_per_s"):
        if t.get(rate):
            out[rate] = t[rate]
    if recall := res.get("recall"):
        out |= {"recall.mean": recall["mean"], "recall.min": recall["min"]}
    for op, o in (res.get("ops") or {}).items():
        out |= {f"ops.{op}.per_s": o["per_s"], f"ops.{op}.error_rate": o["error_rate"],
                f"ops.{op}.bytes_per_s": o["bytes_per_s"]}  # fmt: skip
        out |= {f"ops.{op}.latency_ms.{s}": o["latency_ms"][s] for s in ("p50", "p95", "p99")}
        if o.get("recall") is not None:
            out[f"ops.{op}.recall"] = o["recall"]
    return {k: v for k, v in out.items() if v is not None}


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
    if (res.get("client") or {}).get("host"):
        text += f" [{res['client']['host']}]"
    return text


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), what makes two machines comparable."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(tool_version: str, started: str, finished: str, command: list[str] | None) -> dict[str, Any]:
    return {
        "tool": "pytest-ubench",
        "tool_version": tool_version,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "started": started,
        "finished": finished,
        "service_command": command,
    }


class ResultsDir:
    """One run's results directory (see the module's docstring for its layout)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def case_dir(self, case_id: str) -> Path:
        return self.root / case_id

    @property
    def services(self) -> Path:
        return self.root / "services"

    def service_dir(self, name: str) -> Path:
        """Where a service's script, log and endpoint file live."""
        return self.services / name

    @property
    def sweeps_dir(self) -> Path:
        return self.root / "sweeps"

    def write(self, case_id: str, document: dict[str, Any], records: Records, wall_t0: float) -> Path:
        """A case's results and raw records; a disk that refuses them is a ``ResultsError`` (exit 4)."""
        case_dir = self.case_dir(case_id)
        try:
            write_json(case_dir / RESULTS, document)
            keep(case_dir, records, {"case_id": case_id, "wall_t0": wall_t0})
        except OSError as exc:
            raise ResultsError(f"{case_id}: cannot write results to {case_dir}: {exc.strerror or exc}") from None
        return case_dir

    def has(self, case_id: str) -> bool:
        return (self.case_dir(case_id) / RESULTS).exists()

    def case_dirs(self) -> list[Path]:
        """Every case written so far, in name order."""
        return [p.parent for p in sorted(self.root.glob(f"*/{RESULTS}"))]

    def cases(self) -> list[CaseResult]:
        return [CaseResult.read(d) for d in self.case_dirs()]


def update(case_dir: Path, **parts: Any) -> None:
    """Add parts to a written case's results (the baseline comparison)."""
    doc = read_json(case_dir / RESULTS)
    write_json(case_dir / RESULTS, doc | parts)
