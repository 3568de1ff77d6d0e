"""Allure results for each case, when allure-pytest is installed and collecting (``--alluredir``).

Parameters (the sweep point), labels (recipe, service, protocol, orchestrator), steps (deploy, load,
verdict) and attachments (results.json, raw records, latency CDFs as SVG, the service log tail and,
on Slurm, the batch script). Inactive, every call is a no-op, so the plugin wires it unconditionally.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..metrics.results import RECORDS, RESULTS
from ..recipes.sweep import Case

try:
    import allure
except ImportError:  # an optional extra
    allure = None  # type: ignore[assignment]


class Recorder:
    def __init__(self, active: bool) -> None:
        self.active = active and allure is not None

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        if not self.active:
            yield
            return
        with allure.step(title):
            yield

    def case(self, case: Case, orchestrator: str) -> None:
        if not self.active:
            return
        for key, value in case.point.items():
            allure.dynamic.parameter(key, value)
        spec = case.recipe.service
        if spec is None:
            service: str = case.recipe.workload.protocol  # fio: the file system under test
        else:
            service = Path(spec.command[0]).name if spec.command else (spec.url or "")
        if spec and spec.command and spec.command[0] == "{python}" and len(spec.command) > 2:
            service = spec.command[2]  # "{python} -m module": the module names the service
        for name, value in (("recipe", case.recipe.name), ("service", service),
                            ("protocol", case.recipe.workload.protocol), ("orchestrator", orchestrator)):  # fmt: skip
            allure.dynamic.label(name, value)
        allure.dynamic.tag("ubench")

    def attach(self, run_dir: Path, service_dir: Path | None, log_tail: str, figure: str) -> None:
        if not self.active:
            return
        kind = allure.attachment_type
        allure.attach.file(str(run_dir / RESULTS), RESULTS, kind.JSON)
        allure.attach.file(str(run_dir / RECORDS), RECORDS, extension="parquet")  # docs/records.md
        if figure:
            allure.attach(figure, "latency CDFs", kind.SVG)
        if log_tail:
            allure.attach(log_tail, "service log (tail)", kind.TEXT)
        if (run_dir / "job.fio").exists():
            allure.attach.file(str(run_dir / "job.fio"), "fio job file", kind.TEXT)
        if service_dir is not None and (service_dir / "job.sbatch").exists():
            allure.attach.file(str(service_dir / "job.sbatch"), "batch script", kind.TEXT)
