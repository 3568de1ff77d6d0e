"""What installing pytest-ubench costs a pytest run that never uses it: startup against ``-p no:ubench``.

Not a test: prints figures (docs/plugin.md quotes them). A project of one trivial test, run alternately
with the plugin loaded (dormant) and disabled, ``--rounds`` times each; the medians and their difference.

    .venv/bin/python benchmarks/perf/plugin_startup.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def once(project: Path, *extra: str) -> float:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=project, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="plugin-startup-") as tmp:
        project = Path(tmp)
        (project / "test_plain.py").write_text("def test_plain():\n    assert 1 + 1 == 2\n")
        once(project)  # warm the file cache and the bytecode
        loaded, disabled = [], []
        for _ in range(args.rounds):  # alternated: drift of the machine hits both alike
            loaded.append(once(project))
            disabled.append(once(project, "-p", "no:ubench"))
    a, b = statistics.median(loaded), statistics.median(disabled)
    print(f"pytest startup, a project that does not use ubench ({args.rounds} rounds each, medians):")
    print(f"  plugin installed, dormant: {a:.3f} s")
    print(f"  -p no:ubench:              {b:.3f} s")
    print(f"  cost of the dormant plugin: {a - b:+.3f} s")


if __name__ == "__main__":
    main()
