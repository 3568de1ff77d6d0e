"""How often the baseline gate cries wolf, and what it catches: measured on this machine with the defaults.

Not a test: prints figures (docs/baselines.md quotes them). For each subject, a baseline is saved with
the defaults (``--baseline-runs 5``), then:

- A/A: the unchanged subject rerun ``--reruns`` times, each a fresh ``ubenchai client run`` process
  against that baseline; the share of reruns with any case failing the gate is the false-alarm rate (and
  how many were flagged at the first look, before the confirming run on a fresh deployment, is printed). Again, baseline
  and reruns, with a noisy neighbour: a process that works and rests in random bursts of 0.1 to 2 s.
- Injected slowdowns (the ground-truth server only): its TTFT and ITL made 10, 20 and 30 % slower; the
  share of reruns flagged is the detection rate.

Subjects: the main job's recipe (llm-inference on the embedded llama.cpp, durations shortened) and a
ground-truth stream server (TTFT 20 ms, ITL 4 ms, 32 tokens, 4 streams).

    .venv/bin/python benchmarks/perf/gate_rates.py [--reruns 20] [--seconds 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pytest_ubench.metrics.compare import Comparison, table

ROOT = Path(__file__).resolve().parents[2]
TRUTH = ["{python}", "-m", "pytest_ubench.testing.truthserver", "--port", "{port}"]


def truth_recipe(slower: float, seconds: float) -> dict[str, object]:
    return {
        "name": "truth-gate",
        "service": {"command": [*TRUTH, "--ttft-ms", f"{20 * (1 + slower):g}", "--itl-ms", f"{4 * (1 + slower):g}"]},
        "workload": {"protocol": "openai-chat", "model": "m", "load": {"mode": "closed", "concurrency": 4},
                     "dataset": {"prompt_tokens": 16, "output_tokens": 32, "prompts": 64}, "duration_s": seconds,
                     "warmup_s": 0.5},
    }  # fmt: skip


def run(recipe: Path, out: Path, *extra: str) -> dict[str, str]:
    """One fresh ``ubenchai client run``: each case's outcome, ``regressed`` (flagged and confirmed),
    ``not confirmed`` (flagged, and a run on a fresh deployment was not) or ``passed`` (a run that
    produced no results at all is an error, not a pass)."""
    cmd = [
        sys.executable,
        "-m",
        "pytest_ubench",
        "client",
        "run",
        "--recipe",
        str(recipe),
        "--output",
        str(out),
        *extra,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, cwd=ROOT)
    flagged = {}
    for path in sorted(out.glob("*/results.json")):
        data = json.loads(path.read_text())
        gate = data.get("baseline") or {}
        outcome = "regressed" if gate.get("regressed") else "not confirmed" if gate.get("confirmation") else "passed"
        flagged[data["case_id"]] = outcome
    if not flagged:
        raise SystemExit(f"{' '.join(cmd)} wrote no results (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return flagged


def last_table(tmp: Path) -> str:
    """The gate's table from the newest rerun: what a CI log shows when the gate fails."""
    newest = max(tmp.glob("r*/*/results.json"), key=lambda p: p.stat().st_mtime)
    rows = json.loads(newest.read_text())["baseline"]["comparisons"]
    return table([Comparison(**(row | {"samples": tuple(row["samples"])})) for row in rows])


NEIGHBOUR = """
import random, time
while True:  # a noisy neighbour: bursts of work and of rest, 0.1 to 2 s each
    end = time.monotonic() + random.uniform(0.1, 2.0)
    while time.monotonic() < end:
        pass
    time.sleep(random.uniform(0.1, 2.0))
"""


def rate(recipe: Path, over: list[str], baseline: Path, reruns: int, tmp: Path) -> tuple[int, int, list[str], int]:
    """Reruns against ``baseline``: how many failed the gate and which cases; and how many were flagged at
    the first look but not confirmed by a run on a fresh deployment."""
    hits, seen, first_look = 0, [], 0
    for i in range(reruns):
        outcomes = run(recipe, tmp / f"r{time.monotonic_ns()}", *over, "--baseline", str(baseline))
        cases = [case for case, o in outcomes.items() if o == "regressed"]
        blips = [case for case, o in outcomes.items() if o == "not confirmed"]
        hits += bool(cases)
        first_look += bool(cases or blips)
        seen += cases
        said = ("FAILED " + ", ".join(cases)) if cases else "passed"
        print(f"    rerun {i + 1:>2}: {said}" + (f" (flagged, not confirmed: {', '.join(blips)})" if blips else ""),
              flush=True)  # fmt: skip
    return hits, reruns, seen, first_look


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reruns", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=4.0, help="measurement window of each case of the main job")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gate-rates-"))
    main_over = tmp / "main-short.yaml"
    main_over.write_text(yaml.safe_dump({"workload": {"duration_s": args.seconds, "warmup_s": 1.0}}))
    truth = tmp / "truth-gate.yaml"
    truth.write_text(yaml.safe_dump(truth_recipe(0.0, 3.0)))
    subjects = {
        "main job (llm-inference)": (ROOT / "recipes" / "llm-inference.yaml", ["--override", str(main_over)]),
        "ground-truth server": (truth, []),
    }
    print(f"# baseline gate error rates  {time.strftime('%Y-%m-%d %H:%M')}  defaults: --baseline-runs 5, "
          f"min_change 10 %, alpha 0.01 per case (alpha / k for each of its k metrics), a flag confirmed by one "
          f"run on a fresh deployment; {args.reruns} reruns each\n", flush=True)  # fmt: skip
    for name, (recipe, over) in subjects.items():
        for busy in (False, True):
            # A/A under one condition: the baseline is saved under it too (a neighbour that is always
            # there is part of the machine; one that comes and goes is noise)
            neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) if busy else None
            try:
                baseline = tmp / f"baseline-{recipe.stem}-{'busy' if busy else 'quiet'}"
                t0 = time.monotonic()
                run(recipe, tmp / f"save-{time.monotonic_ns()}", *over, "--save-baseline", str(baseline))
                where = "with a noisy neighbour (bursts of one busy core)" if busy else "quiet machine"
                print(f"{name}, {where}: baseline saved in {time.monotonic() - t0:.0f} s", flush=True)
                hits, n, seen, first_look = rate(recipe, over, baseline, args.reruns, tmp)
                print(f"  A/A: {hits}/{n} reruns failed the gate = false-alarm rate {hits / n:.0%}"
                      + (f" (cases: {', '.join(sorted(set(seen)))})" if seen else "")
                      + f"; flagged at the first look: {first_look}/{n}", flush=True)  # fmt: skip
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
            if recipe == truth and not busy:
                smallest = None
                for slower in (0.30, 0.20, 0.10):
                    slow = tmp / f"truth-{slower:g}.yaml"
                    slow.write_text(yaml.safe_dump(truth_recipe(slower, 3.0)))
                    hits, n, _, _ = rate(slow, [], baseline, args.reruns, tmp)
                    print(f"  {slower:.0%} slower (TTFT and ITL): {hits}/{n} caught = detection rate {hits / n:.0%}",
                          flush=True)  # fmt: skip
                    if hits >= 0.95 * n and (smallest is None or slower < smallest):
                        smallest = slower
                    print("  the gate's table of the last of them:\n    " + last_table(tmp).replace("\n", "\n    "))
                print("  smallest slowdown caught in >= 95 % of reruns: "
                      + (f"{smallest:.0%}" if smallest is not None else "none of 10/20/30 %"), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
