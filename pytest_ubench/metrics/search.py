"""Max load under SLO: bracket by doubling from ``low``, then bisect to a stated precision.

Each probe is a real run at one load; a probe that fails any SLO (or the run's health) bounds the
answer from above. Doubling stops at the first failing probe, so a clearly saturated service costs
one probe beyond the answer, not a sweep of the whole range. The result carries every probe's
figures: the evidence for the number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Probe:
    value: float
    passed: bool
    figures: dict[str, Any] = field(default_factory=dict)  # key figures and the failing SLOs
    saturated: bool = False  # stopped early: clearly past capacity


@dataclass
class SearchResult:
    over: str
    low: float
    high: float
    precision: float
    best: float | None  # the highest probed load that met every SLO
    bracket: tuple[float | None, float | None]  # (highest passing, lowest failing)
    probes: list[Probe]
    note: str

    def to_json(self) -> dict[str, Any]:
        return {
            "over": self.over,
            "low": self.low,
            "high": self.high,
            "precision": self.precision,
            "max_passing": self.best,
            "bracket": list(self.bracket),
            "note": self.note,
            "probes": [
                {"value": p.value, "passed": p.passed, "saturated": p.saturated, **p.figures} for p in self.probes
            ],
        }


def find_max(
    probe: Callable[[float], Probe], over: str, low: float, high: float, precision: float, integer: bool
) -> SearchResult:
    """The highest load in ``[low, high]`` that passes, to within ``precision`` (relative) of the truth."""
    probes: list[Probe] = []

    def run(v: float) -> Probe:
        p = probe(float(round(v)) if integer else v)
        probes.append(p)
        return p

    def result(best: float | None, failing: float | None, note: str) -> SearchResult:
        return SearchResult(over, low, high, precision, best, (best, failing), probes, note)

    if not run(low).passed:
        return result(None, low, f"even the lowest load ({over} = {low:g}) fails the SLOs")
    ok, bad = low, None
    while bad is None:
        nxt = min(ok * 2, high)
        if run(nxt).passed:
            ok = nxt
            if nxt >= high:
                return result(high, None, f"meets the SLOs at the top of the range ({over} = {high:g}); raise 'high'")
        else:
            bad = nxt
    while (bad - ok) / ok > precision and not (integer and bad - ok <= 1):
        mid = math.floor((ok + bad) / 2) if integer else (ok + bad) / 2
        if run(mid).passed:
            ok = mid
        else:
            bad = mid
    return result(ok, bad, f"max {over} meeting every SLO: {ok:g} (fails at {bad:g})")
