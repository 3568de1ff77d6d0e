"""SLO expressions: ``<metric path> <op> <number>``, parsed once and judged against a summary.

Parsing happens when the recipe is loaded, so an unknown metric is a recipe error rather than a
silent pass at the end of a long run.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator

from .names import LATENCY_METRICS, MIN_SAMPLES, STATS, known_paths

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
_EXPR = re.compile(r"\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*")


class SLOSyntaxError(ValueError):
    """An SLO expression that cannot be parsed or names an unknown metric."""


@dataclass(frozen=True)
class SLO:
    expression: str
    path: str
    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    @property
    def per_request_bound(self) -> tuple[str, float] | None:
        """A latency ceiling (``ttft_ms.p95 < 500``) also bounds each request for goodput."""
        metric = self.path.split(".", 1)[0]
        if metric in LATENCY_METRICS and self.op in ("<", "<="):
            return metric, self.threshold
        return None


@dataclass(frozen=True)
class Verdict:
    expression: str
    measured: float | None
    allowed: str
    passed: bool
    note: str = ""  # e.g. the percentile is under-sampled

    def describe(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        shown = "n/a (no successful requests)" if self.measured is None else f"{self.measured:.4g}"
        return f"{mark} {self.expression}: measured {shown}, allowed {self.allowed}" + (
            f" ({self.note})" if self.note else ""
        )


SERVER_STATS = ("min", "mean", "max", "last")


def server_query(s: SLO) -> str | None:
    """The named server-side query an SLO refers to (``server.kv_cache_usage.max``), if any."""
    parts = s.path.split(".")
    return parts[1] if parts[0] == "server" else None


def parse(expression: str) -> SLO:
    match = _EXPR.fullmatch(expression)
    if not match:
        raise SLOSyntaxError(
            f"cannot parse SLO {expression!r}; expected '<metric> <op> <number>', e.g. 'ttft_ms.p95 < 500'"
        )
    path, op, number = match.groups()
    parts = path.split(".")
    if parts[0] == "server":
        # Query names are checked against the recipe's monitor part, which this module cannot see.
        if len(parts) != 3 or parts[2] not in SERVER_STATS:
            raise SLOSyntaxError(f"server SLO {expression!r} must read 'server.<query>.<{'|'.join(SERVER_STATS)}>'")
        return SLO(expression.strip(), path, op, float(number))
    if parts[0] == "ops":
        # Operation names come from the recipe's workload (get/set, statement names).
        stat_ok = (len(parts) == 4 and parts[2] == "latency_ms" and parts[3] in STATS) or (
            len(parts) == 3 and parts[2] in ("per_s", "bytes_per_s", "error_rate", "recall")
        )
        if not stat_ok:
            raise SLOSyntaxError(
                f"operation SLO {expression!r} must read 'ops.<op>.latency_ms.<stat>', 'ops.<op>.per_s', "
                "'ops.<op>.bytes_per_s', 'ops.<op>.error_rate' or 'ops.<op>.recall'"
            )
        return SLO(expression.strip(), path, op, float(number))
    if path not in known_paths():
        hint = ", ".join(sorted({p.split(".")[0] for p in known_paths()}))
        raise SLOSyntaxError(f"unknown metric {path!r} in SLO {expression!r}; known metrics: {hint}")
    return SLO(expression.strip(), path, op, float(number))


def _parse_field(value: Any) -> SLO:
    if isinstance(value, SLO):
        return value
    if not isinstance(value, str):
        raise SLOSyntaxError(f"an SLO is a string like 'ttft_ms.p95 < 500', got {value!r}")
    return parse(value)


# A recipe's SLO: written as text, parsed once when the recipe is loaded, kept as an object.
SLOField = Annotated[SLO, PlainValidator(_parse_field), PlainSerializer(lambda s: s.expression, return_type=str)]


def bounds(slos: list[SLO]) -> list[tuple[str, float]]:
    """The per-request latency bounds among the SLOs (a request meeting them all counts as goodput)."""
    return [b for s in slos if (b := s.per_request_bound) is not None]


def lookup(summary: Mapping[str, Any], path: str) -> float | None:
    """Find a dotted path in a results summary (``metrics`` are searched for latency names)."""
    head, _, rest = path.partition(".")
    if head in LATENCY_METRICS:
        node: Any = summary["metrics"].get(head, {})
        value = node.get(rest)
    elif head == "error_rate":
        value = summary["requests"]["error_rate"]
    elif head == "server":
        name, _, stat = rest.partition(".")
        value = (summary.get("server_metrics") or {}).get(name, {}).get(stat)
    else:  # ops.<op>.<figure>, phases.<phase>.<figure>, requests.ok, recall.mean, ...
        node = summary.get(head)
        for part in rest.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        value = node
    return None if value is None else float(value)


def judge(slos: list[SLO], summary: Mapping[str, Any], strict_samples: bool = False) -> list[Verdict]:
    """Each SLO against the summary; one on an under-sampled percentile says so (and fails when strict)."""
    verdicts = []
    for slo in slos:
        measured = lookup(summary, slo.path)
        passed = measured is not None and slo.holds(measured)
        note = ""
        head, _, stat = slo.path.partition(".")
        if head in LATENCY_METRICS and stat in MIN_SAMPLES:
            stats = summary["metrics"].get(head, {})
            if stat in stats.get("under_sampled", []):
                note = f"under-sampled: {stats['count']} samples, {stat} needs >= {MIN_SAMPLES[stat]}"
                passed = passed and not strict_samples
        verdicts.append(Verdict(slo.expression, measured, f"{slo.op} {slo.threshold:g}", passed, note))
    return verdicts
