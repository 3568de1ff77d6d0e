"""How much room the shipped recipes' SLOs leave on this machine: the worst figure over repeated runs.

Not a test: prints figures (the recipes' comments and the README quote them). Each recipe is run
``--runs`` times as test_shipped_recipes.py runs it (``ubenchai client run`` on the file as shipped, its
durations shortened the same way), optionally beside a noisy neighbour (bursts of one busy core, as in
gate_rates.py). For every case and SLO it prints the worst measured value, the bound, and the headroom
(bound / worst for a ceiling, worst / bound for a floor: above 1 passes). An SLO whose headroom sits
near 1 fails some runs on this machine, and the shipped recipe with it.

    .venv/bin/python benchmarks/perf/slo_headroom.py llm-inference vector-chroma [--runs 5] [--neighbour]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from gate_rates import NEIGHBOUR

from pytest_ubench.metrics.slo import SLO, SLOSyntaxError, parse

REPO = Path(__file__).resolve().parents[2]
SHORT = ["--set", "workload.duration_s=1.5", "--set", "workload.warmup_s=0.5"]  # as test_shipped_recipes.py


def run_once(name: str, out: Path, extra: list[str]) -> dict[tuple[str, str], float]:
    """One run of the recipe: every case's measured value per SLO expression."""
    cmd = [sys.executable, "-m", "pytest_ubench", "client", "run", "--recipe", str(REPO / "recipes" / f"{name}.yaml"),
           "--output", str(out), *SHORT, *extra]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode not in (0, 1):  # 1: an SLO failed, which is what this script counts
        raise SystemExit(f"{name}: exit {done.returncode}\n{done.stderr[-2000:]}")
    measured: dict[tuple[str, str], float] = {}
    for path in sorted(out.glob("*/results.json")):
        for verdict in json.loads(path.read_text())["slo"]:
            if verdict["measured"] is not None:
                measured[(path.parent.name, verdict["expression"])] = float(verdict["measured"])
    return measured


def headroom(slo: SLO, value: float) -> float:
    if slo.op in ("<", "<="):
        return slo.threshold / value if value else float("inf")
    if slo.op in (">", ">="):
        return value / slo.threshold if slo.threshold else float("inf")
    return float("nan")  # ==: no room to speak of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("recipes", nargs="+", help="names under recipes/")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--neighbour", action="store_true", help="beside a noisy neighbour (bursts of one busy core)")
    ap.add_argument("--set", action="append", default=[], help="further --set overrides (e.g. for llm-capacity)")
    args = ap.parse_args()
    extra = [a for s in args.set for a in ("--set", s)]
    neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) if args.neighbour else None
    try:
        for name in args.recipes:
            values: dict[tuple[str, str], list[float]] = defaultdict(list)
            with tempfile.TemporaryDirectory(prefix="ubench-headroom-") as tmp:
                for i in range(args.runs):
                    for key, value in run_once(name, Path(tmp) / str(i), extra).items():
                        values[key].append(value)
            where = "beside a noisy neighbour" if args.neighbour else "quiet machine"
            print(f"\n{name}: {args.runs} runs, {where}")
            for (case, expression), seen in sorted(values.items()):
                try:
                    slo = parse(expression)
                except SLOSyntaxError:  # a verdict of the run's own ("client is not the bottleneck")
                    continue
                rooms = [headroom(slo, v) for v in seen]
                worst = seen[rooms.index(min(rooms))]
                failed = sum(r <= 1 for r in rooms)
                print(f"  {case:40s} {expression:42s} worst {worst:10.4g}  headroom {min(rooms):5.2f}  "
                      f"failed {failed}/{len(seen)}")  # fmt: skip
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


if __name__ == "__main__":
    main()
