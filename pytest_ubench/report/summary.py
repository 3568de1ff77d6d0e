"""A case's summary as HTML for pytest-html: figures, percentiles, verdicts and inline latency CDFs."""

from __future__ import annotations

from html import escape

from ..session import CaseResult


def summary_html(result: CaseResult, figure: str = "") -> str:
    """Key figures, percentiles of every metric and SLO verdicts (and a figure) as one HTML fragment."""
    rows = []
    for name, stats in result.result["metrics"].items():
        cells = "".join(
            f"<td>{'' if stats.get(k) is None else f'{stats[k]:.2f}'}</td>" for k in ("p50", "p90", "p95", "p99", "max")
        )
        rows.append(f"<tr><th>{escape(name)}</th><td>{stats['count']}</td>{cells}</tr>")
    verdicts = "".join(
        f"<li style='color:{'green' if v.passed else 'red'}'>{escape(v.describe())}</li>" for v in result.verdicts
    )
    return (
        f"<div class='ubench'><p>{escape(result.key_figures())}</p>"
        "<table border='1'><tr><th>metric</th><th>count</th><th>p50</th><th>p90</th><th>p95</th><th>p99</th>"
        f"<th>max</th></tr>{''.join(rows)}</table><ul>{verdicts}</ul>{figure}</div>"
    )
