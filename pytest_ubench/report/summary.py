"""A case's summary as HTML for pytest-html: figures, percentiles, verdicts and inline latency CDFs."""

from __future__ import annotations

from html import escape
from typing import Any

from ..metrics.results import CaseResult
from .standalone import operation_rows, replica_rows


def _num(v: Any) -> str:
    return "" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr><th>{escape(str(row[0]))}</th>" + "".join(f"<td>{escape(_num(c))}</td>" for c in row[1:]) + "</tr>"
        for row in rows
    )
    return f"<table border='1'><tr>{head}</tr>{body}</table>"


def summary_html(result: CaseResult, figure: str = "") -> str:
    """Key figures, percentiles of every metric (and of every operation class: GET/SET, statements,
    vector queries, fio jobs), SLO verdicts and a figure, as one HTML fragment."""
    rows = []
    for name, stats in result.result["metrics"].items():
        if not stats.get("count"):
            continue  # a metric this protocol has no samples of (TTFT of a database call)
        cells = "".join(f"<td>{_num(stats.get(k))}</td>" for k in ("p50", "p90", "p95", "p99", "max"))
        rows.append(f"<tr><th>{escape(name)}</th><td>{stats['count']}</td>{cells}</tr>")
    op_table = ""
    if ops := result.result.get("ops"):
        op_table = _table(*operation_rows(ops))
    if part := result.result.get("replicas"):
        op_table += _table(*replica_rows(part))
    verdicts = "".join(
        f"<li style='color:{'green' if v.passed else 'red'}'>{escape(v.describe())}</li>" for v in result.verdicts
    )
    return (
        f"<div class='ubench'><p>{escape(result.key_figures())}</p>"
        "<table border='1'><tr><th>metric</th><th>count</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th>"
        f"<th>max</th></tr>{''.join(rows)}</table>{op_table}<ul>{verdicts}</ul>{figure}</div>"
    )
