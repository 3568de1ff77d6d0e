"""One self-contained HTML file per run: tables and inline SVG plots, no script, no CDN, no request at
view time (a Content-Security-Policy forbids any), so it opens on an air-gapped node or as a CI artifact.

Content: an overview of the cases; per recipe swept over a load axis, throughput and latency against
load with the knee marked; per case, the SLO verdicts, the latency table, latency CDFs, TTFT and
throughput over time with the warm-up shaded, and the server-side series when monitoring ran.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..metrics import capacity
from ..metrics.columns import Records, Values
from ..metrics.results import RESULTS, CaseResult, ResultsDir
from . import plots

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.pass{color:#107010}.fail{color:#b00020}
section{margin-bottom:2.5em}svg{max-width:100%;height:auto}.note{color:#666}
"""


def cdf_series(values: Values) -> dict[str, np.ndarray]:
    """Per-request TTFT and E2E, and every ITL gap, of the measured successful requests (ms)."""
    return {"TTFT": values.series("ttft_ms"), "ITL": values.itl_ms, "E2E": values.series("e2e_ms")}


def _measured_ok(case: CaseResult) -> Records:
    records = case.records()
    return records.take(records.ok & ~records["warmup"])


def cdf_figure(case: CaseResult) -> str:
    """A case's latency CDFs as inline SVG, from its records ("" when nothing succeeded)."""
    measured = _measured_ok(case)
    return plots.cdfs(cdf_series(measured.values())) if len(measured) else ""


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]], cls: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f'<tr class="{cls[i] if cls else ""}">' + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _overview(cases: list[CaseResult]) -> str:
    rows, cls = [], []
    for c in cases:
        r = c.result
        m, t = r["metrics"], r["throughput"]
        rows.append([r["case_id"], "PASS" if r["passed"] else "FAIL", f"{r['requests']['ok']}/{r['requests']['total']}",
                     m["ttft_ms"]["p50"], m["ttft_ms"]["p95"], m["itl_ms"]["p50"], m["e2e_ms"]["p95"],
                     t["requests_per_s"], t["output_tokens_per_s"]])  # fmt: skip
        cls.append("pass" if r["passed"] else "fail")
    header = ["case", "verdict", "ok/total", "TTFT p50 ms", "TTFT p95 ms", "ITL p50 ms", "E2E p95 ms", "req/s", "tok/s"]
    return _table(header, rows, cls)


def _tradeoff_html(name: str, group: list[dict[str, Any]]) -> str:
    t = capacity.tradeoff(group)
    if t is None:
        return ""
    header = ["case", *t["axes"], "recall@k", "min", "queries/s", "E2E p95 ms", "Pareto"]
    rows = [[p["case_id"], *(p[a] for a in t["axes"]), p["recall"], p["recall_min"], p["queries_per_s"],
             p["e2e_p95_ms"], "yes" if p["case_id"] in t["pareto"] else ""] for p in t["points"]]  # fmt: skip
    return f"<h3>{html.escape(name)}: recall against throughput</h3>" + _table(header, rows)


def _scaling_html(name: str, group: list[dict[str, Any]]) -> str:
    s = capacity.scaling(group)
    if s is None:
        return ""
    unit = "tok/s" if s["of"] == "output_tokens_per_s" else "req/s"
    header = ["case", "replicas", unit, "speedup", "efficiency", "TTFT p50 ms", "E2E p50 ms", "E2E p99 ms", "lost"]
    rows = [[p["case_id"], p["replicas"], p["throughput"], p["speedup"], p["efficiency"], p["ttft_p50_ms"],
             p["e2e_p50_ms"], p["e2e_p99_ms"], p["lost"]] for p in s["points"]]  # fmt: skip
    points = s["points"]
    figure = plots.scaling([p["replicas"] for p in points], [p["throughput"] for p in points], unit,
                           {"TTFT p50": [p["ttft_p50_ms"] or 0.0 for p in points],
                            "E2E p99": [p["e2e_p99_ms"] or 0.0 for p in points]})  # fmt: skip
    return (f"<h3>{html.escape(name)}: scaling over replicas</h3><p>{html.escape(s['rule'])}</p>"
            + _table(header, rows) + figure)  # fmt: skip


def sweeps_html(cases: list[CaseResult]) -> str:
    by_recipe: dict[str, list[dict[str, Any]]] = {}
    for c in cases:
        by_recipe.setdefault(c.result["recipe"]["name"], []).append(c.result)
    out = []
    for name, group in by_recipe.items():
        out.append(_tradeoff_html(name, group))
        out.append(_scaling_html(name, group))
        sweep = capacity.sweep(group)
        if sweep is None:
            continue
        axis, points, k = sweep["axis"], sweep["points"], sweep["knee"]
        loads = [float(p[axis]) for p in points]
        thr = [p["requests_per_s"] for p in points]
        lat = {f"{m} p95": [p[f"{m}_p95_ms"] or 0.0 for p in points] for m in ("ttft", "e2e")}
        text = f"knee at {axis} = {k[axis]:g} ({html.escape(sweep['rule'])})" if k else "no knee within the sweep"
        out.append(
            f"<h3>{html.escape(name)}: sweep over {axis}</h3><p>{text}</p>"
            + plots.sweep(loads, axis, thr, lat, k["index"] if k else None)
        )
    return "<section><h2>Sweeps</h2>" + "".join(out) + "</section>" if any(out) else ""


def _case(c: CaseResult) -> str:
    r = c.result
    parts = [f'<section id="{html.escape(r["case_id"])}"><h2>{html.escape(r["case_id"])}</h2>']
    parts.append(f"<p>endpoint {html.escape(str(r['endpoint']))} · {_fmt(r['provenance'].get('started'))}</p>")
    if r.get("partial"):  # a run that never ended: its last checkpoint
        parts.append(
            f'<p class="fail">partial: {html.escape(r["aborted"] or "")}; {html.escape(r["partial"]["note"])}</p>'
        )
    if r["slo"]:
        rows = [[s["expression"], s["measured"], s["allowed"], "PASS" if s["passed"] else "FAIL"] for s in r["slo"]]
        parts.append("<h3>SLOs</h3>" + _table(["SLO", "measured", "allowed", "verdict"], rows,
                                               ["pass" if s["passed"] else "fail" for s in r["slo"]]))  # fmt: skip
    parts.append(_operations(r))
    if r.get("replicas"):
        header, rows = replica_rows(r["replicas"])
        routing = html.escape(r["replicas"]["routing"])
        parts.append(f"<h3>Replicas ({r['replicas']['count']}, {routing})</h3>" + _table(header, rows))
    stats = ["count", "mean", "p50", "p90", "p99", "max"]
    rows = [[k, *(v.get(s) for s in stats)] for k, v in r["metrics"].items() if v.get("count")]
    if rows:
        parts.append("<h3>Latency (ms)</h3>" + _table(["metric", *stats], rows))
    measured = _measured_ok(c)
    if len(measured):
        values = measured.values()
        parts.append("<h3>Latency distributions</h3>" + plots.cdfs(cdf_series(values)))
        records = c.records()
        warmup_end = float(measured["intended"].min()) if records["warmup"].any() else 0.0
        ends = records["end"][records.ok]
        parts.append(
            "<h3>Over time</h3>"
            + plots.over_time(measured["start"], values.ttft_ms, ends, warmup_end, float(ends.max(initial=1)))
        )
    parts.append(_trust(r))
    server = r.get("server_metrics")
    if server:
        named = {k: v.get("series") or [] for k, v in server.items()}
        t0 = min((p[0] for pts in named.values() for p in pts), default=0.0)
        parts.append("<h3>Server side (Prometheus)</h3>" + plots.series(named, t0))
    elif r.get("monitoring") and r["monitoring"].get("note"):
        parts.append(f'<p class="note">server-side metrics: {html.escape(r["monitoring"]["note"])}</p>')
    if r.get("service_failure"):
        parts.append(f'<pre class="fail">{html.escape(r["service_failure"])}</pre>')
    parts.append("</section>")
    return "".join(parts)


def operation_rows(ops: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The operations table (header, rows): this report's and pytest-html's."""
    recall = any("recall" in o for o in ops.values())
    header = ["operation", "count", "per s", "MB/s", "p50 ms", "p95 ms", "p99 ms", "error rate"]
    rows = [[name, o["total"], o["per_s"], (o.get("bytes_per_s") or 0) / 1e6, o["latency_ms"].get("p50"),
             o["latency_ms"].get("p95"), o["latency_ms"].get("p99"), o["error_rate"]]
            + ([o.get("recall")] if recall else []) for name, o in ops.items()]  # fmt: skip
    return header + (["recall@k"] if recall else []), rows


def replica_rows(part: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """A service's replicas, one row each: what each served and how fast, and whether it was lost."""
    header = ["replica", "url", "ok", "failed", "req/s", "tok/s", "TTFT p50 ms", "TTFT p99 ms", "E2E p50 ms",
              "E2E p99 ms", "lost at s", "state"]  # fmt: skip
    rows = [[p["replica"], p["url"], p["requests"]["ok"], p["requests"]["failed"], p["throughput"]["requests_per_s"],
             p["throughput"]["output_tokens_per_s"], p["ttft_ms"]["p50"], p["ttft_ms"]["p99"], p["e2e_ms"]["p50"],
             p["e2e_ms"]["p99"], p["lost_at_s"], p.get("state", "")] for p in part["per_replica"]]  # fmt: skip
    return header, rows


def _operations(r: dict[str, Any]) -> str:
    """Per operation class (GET/SET, statements, vector queries, fio jobs), recall and setup phases."""
    parts = []
    ops = r.get("ops") or {}
    if ops:
        parts.append("<h3>Operations</h3>" + _table(*operation_rows(ops)))
    if r.get("recall"):
        rc = r["recall"]
        parts.append(f"<p>recall@{r['dataset'].get('top_k', 'k')} against the exact answer: mean {_fmt(rc['mean'])}, "
                     f"p50 {_fmt(rc.get('p50'))}, min {_fmt(rc['min'])} over {rc['count']} queries</p>")  # fmt: skip
    phases = r.get("phases")
    if phases:
        rows = [[name, p.get("seconds"), p.get("vectors"), p.get("vectors_per_s")]
                for name, p in phases.items() if isinstance(p, dict)]  # fmt: skip
        by = f" (built by {html.escape(phases['prepared_by'])})" if phases.get("prepared_by") else ""
        parts.append(f"<h3>Setup phases{by}</h3>" + _table(["phase", "seconds", "vectors", "vectors/s"], rows))
    return "".join(parts)


def _trust(r: dict[str, Any]) -> str:
    """How far the figures can be trusted: steady state, the client's self-check, repeats; and the
    capacity answers carried inside a case (ramp steps, the SLO search)."""
    parts = []
    st = r.get("steady_state")
    if st:
        verdict = {True: "stable", False: "never became stable within the run"}.get(st["stable"], st.get("note", ""))
        t, m = st["throughput"], st["metrics"]
        parts.append(f"<p>steady state ({st['method']}): from {st['start_s']:g} s to {st['end_s']:g} s, {verdict}; "
                     f"{_fmt(t['requests_per_s'])} req/s, TTFT p50 {_fmt(m['ttft_ms']['p50'])} ms, "
                     f"E2E p95 {_fmt(m['e2e_ms']['p95'])} ms over that window</p>")  # fmt: skip
    client = r.get("client")
    if client:
        cls = "fail" if client.get("bottleneck") else "note"
        said = "; ".join(client["reasons"]) if client.get("reasons") else "kept up"
        figures = (
            f"CPU max {_fmt(client.get('cpu_busy_max'))}, loop lag p99 {_fmt(client.get('loop_lag_p99_ms'))} ms, "
            f"send lag p99 {_fmt(client.get('send_lag_p99_ms'))} ms"
        )
        parts.append(
            f'<p class="{cls}">load client ({client["processes"]} process(es)): {html.escape(said)}; {figures}</p>'
        )
        if client.get("host"):
            parts.append(f'<p class="note">{html.escape(client["host"])}</p>')
    rep = r.get("repeats")
    if rep:
        rows = [[k, v["mean"], v["ci_low"], v["ci_high"], v["cv"], v["quality"]] for k, v in rep["figures"].items()
                if k.startswith("throughput") or k.endswith((".p50", ".p95"))]  # fmt: skip
        parts.append(f"<h3>Repeats ({rep['n']} runs)</h3>"
                     + _table(["figure", "mean", "95% CI low", "95% CI high", "CV", "quality"], rows))  # fmt: skip
    stages = r.get("stages")
    if stages:
        rows = [[s["rate"], s["requests"]["total"], s["throughput"]["requests_per_s"], s["metrics"]["ttft_ms"]["p95"],
                 s["metrics"]["e2e_ms"]["p95"]] for s in stages]  # fmt: skip
        parts.append("<h3>Ramp steps</h3>" + _table(["rate", "requests", "req/s", "TTFT p95 ms", "E2E p95 ms"], rows))
    found = r.get("search")
    if found:
        rows = [[p["value"], "PASS" if p["passed"] else "FAIL", p["requests_per_s"], p["e2e_p95_ms"],
                 p.get("stopped") or "; ".join(p["failed_slos"])] for p in found["probes"]]  # fmt: skip
        parts.append(f"<h3>Search: {html.escape(found['note'])}</h3>"
                     + _table([found["over"], "verdict", "req/s", "E2E p95 ms", "why"], rows,
                              ["pass" if p["passed"] else "fail" for p in found["probes"]]))  # fmt: skip
    return "".join(parts)


def render(root: Path) -> str:
    cases = ResultsDir(root).cases()
    if not cases:
        raise FileNotFoundError(f"no case results (*/{RESULTS}) under {root}")
    title = f"ubench report: {root.name}"
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="note">{len(cases)} cases · generated {generated} by '
        f"pytest-ubench {__version__} · {html.escape(str(root))}</p>"
        f"<section><h2>Overview</h2>{_overview(cases)}</section>{sweeps_html(cases)}"
        + "".join(_case(c) for c in cases)
        + "</body></html>"
    )


def render_monitor(data: dict[str, Any]) -> str:
    """A monitor's window (``ubenchai monitor report``): each query's figures, then its series."""
    rows = [[name, q.get("query"), q.get("min"), q.get("mean"), q.get("max"), q.get("last")]
            for name, q in data["queries"].items()]  # fmt: skip
    named = {k: v.get("series") or [] for k, v in data["queries"].items()}
    start, end = data["window"]
    title = f"ubench monitor report: {data['monitor']}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="note">Prometheus {html.escape(data["prometheus"])} · targets '
        f"{html.escape(', '.join(data['targets']))} · window {end - start:.0f} s from "
        f"{datetime.fromtimestamp(start, UTC).isoformat(timespec='seconds')}</p>"
        f"<section><h2>Queries</h2>{_table(['query', 'PromQL', 'min', 'mean', 'max', 'last'], rows)}</section>"
        f"<section><h2>Series</h2>{plots.series(named, start)}</section></body></html>"
    )
