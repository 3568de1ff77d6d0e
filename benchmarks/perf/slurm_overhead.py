"""What the Slurm orchestrator adds to a service's start and stop, next to the same service started
locally in the same run (the reference). Not a test: prints figures. Needs a Slurm cluster (as root,
``ci/slurm up`` brings up the test cluster):

    .venv/bin/python benchmarks/perf/slurm_overhead.py [--repeat 5] [--cluster ci-slurm]

- local start: ``deploy`` to healthy with the local orchestrator (the service's own start time);
- slurm start: ``sbatch`` to healthy through the Slurm orchestrator; added = slurm - local;
- slurm stop: ``scancel`` until the controller no longer counts the job as active; local stop beside it;
- split of the slurm start at the moment the job wrote its endpoint file (file mtime): before it,
  slurmctld scheduling and the job's launch; after it, the service's own start and our health polling.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pytest_ubench.orchestrators.base import Orchestrator
from pytest_ubench.orchestrators.health import deploy_healthy as deploy
from pytest_ubench.orchestrators.local import LocalOrchestrator
from pytest_ubench.orchestrators.slurm import SlurmOrchestrator
from pytest_ubench.recipes import loader
from pytest_ubench.recipes.deployment import ServiceSpec

SPEC = ServiceSpec(command=["{python}", "-m", "pytest_ubench.testing.truthserver", "--port", "{port}"])


def cycle(orch: Orchestrator, run_dir: Path, split: list[float] | None = None) -> tuple[float, float]:
    t0, wall0 = time.perf_counter(), time.time()
    dep = deploy(orch, SPEC, "overhead", run_dir)
    t1 = time.perf_counter()
    if split is not None:
        split.append((run_dir / "endpoint.json").stat().st_mtime - wall0)
    orch.stop(dep)
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cluster", default="ci-slurm", help="cluster profile name or path")
    args = ap.parse_args()
    profile = loader.load_cluster(args.cluster)
    with tempfile.TemporaryDirectory(prefix="ubench-overhead-", dir=Path.cwd()) as tmp:
        root = Path(tmp)  # under the working directory: shared with the nodes on a real cluster
        figures: dict[str, list[tuple[float, float]]] = {"local": [], "slurm": []}
        to_endpoint: list[float] = []
        for i in range(args.repeat):
            figures["local"].append(cycle(LocalOrchestrator(), root / f"local{i}"))
            figures["slurm"].append(cycle(SlurmOrchestrator(profile), root / f"slurm{i}", to_endpoint))
    med = {k: (statistics.median(s for s, _ in v), statistics.median(t for _, t in v)) for k, v in figures.items()}
    print(f"{'':<8}{'start to healthy (median s)':>30}{'stop to gone (median s)':>26}   runs={args.repeat}")
    for name in ("local", "slurm"):
        print(f"{name:<8}{med[name][0]:>30.3f}{med[name][1]:>26.3f}")
    added = med["slurm"][0] - med["local"][0]
    print(f"added by Slurm to start: {added:.3f} s (target <= 0.5 s); stop: {med['slurm'][1]:.3f} s (target <= 1 s)")
    queue = statistics.median(to_endpoint)
    after = statistics.median(s - e for (s, _), e in zip(figures["slurm"], to_endpoint, strict=True))
    print(
        f"slurm start split: sbatch to endpoint file written {queue:.3f} s (scheduling, job launch, port pick); "
        f"endpoint to healthy {after:.3f} s (service start + polling; local start {med['local'][0]:.3f} s)"
    )
    print("all slurm starts: " + ", ".join(f"{s:.3f}" for s, _ in figures["slurm"]))
    print("all slurm stops:  " + ", ".join(f"{t:.3f}" for _, t in figures["slurm"]))


if __name__ == "__main__":
    main()
