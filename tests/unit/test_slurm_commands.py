"""The Slurm command layer against a fake runner: what it sends and how it reads the answers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from pytest_ubench.orchestrators.slurm.commands import Slurm
from pytest_ubench.orchestrators.slurm.runner import Completed, SlurmError, SubprocessRunner, clean_environment


class FakeRunner:
    """Answers each command from a table keyed by the command name; records every call."""

    def __init__(self, answers: dict[str, list[Completed]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def run(self, argv: Sequence[str], timeout: float) -> Completed:
        self.calls.append(list(argv))
        assert timeout > 0
        return self.answers[argv[0]].pop(0)


def ok(out: str = "") -> Completed:
    return Completed(0, out, "")


def test_submit_reads_the_parsable_job_id_with_or_without_cluster() -> None:
    fake = FakeRunner({"sbatch": [ok("42\n"), ok("43;cluster2\n"), Completed(1, "", "sbatch: error: Invalid account")]})
    slurm = Slurm(fake)
    assert slurm.submit(Path("/x/job.sbatch")) == "42"
    assert slurm.submit(Path("/x/job.sbatch")) == "43"
    assert fake.calls[0] == ["sbatch", "--parsable", "/x/job.sbatch"]
    with pytest.raises(SlurmError, match="Invalid account"):
        slurm.submit(Path("/x/job.sbatch"))


def test_submit_rejects_an_answer_that_is_not_a_job_id() -> None:
    with pytest.raises(SlurmError, match="unexpected answer"):
        Slurm(FakeRunner({"sbatch": [ok("Submitted batch job 7\n")]})).submit(Path("j"))


def test_query_parses_the_explicit_format_and_treats_a_purged_job_as_gone() -> None:
    fake = FakeRunner(
        {
            "squeue": [
                ok("7|PENDING|QOSMaxJobsPerUserLimit|\n"),
                ok("7|RUNNING|None|n1\n"),
                Completed(1, "", "slurm_load_jobs error: Invalid job id specified"),
                ok(""),
            ]
        }
    )
    slurm = Slurm(fake)
    pending = slurm.query("7")
    assert pending is not None and pending.state == "PENDING" and pending.active
    assert "QOSMaxJobsPerUserLimit" in pending.describe()
    running = slurm.query("7")
    assert running is not None and running.nodes == "n1"
    assert slurm.query("7") is None
    assert slurm.query("7") is None
    assert fake.calls[0][-2:] == ["-o", "%i|%T|%r|%N"] and "--states=all" in fake.calls[0]


def test_final_reads_exit_code_and_signal_from_scontrol() -> None:
    line = "JobId=9 JobName=x JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=3:0 NodeList=n2\n"
    killed = "JobId=10 JobState=CANCELLED Reason=None ExitCode=0:15 NodeList=n1\n"
    slurm = Slurm(FakeRunner({"scontrol": [ok(line), ok(killed)]}))
    info = slurm.final("9")
    assert info is not None and (info.state, info.exit_code, info.nodes) == ("FAILED", 3, "n2")
    info = slurm.final("10")
    assert info is not None and (info.state, info.exit_code) == ("CANCELLED", 143)


def test_accounting_disabled_is_remembered_and_not_an_error() -> None:
    disabled = Completed(1, "", "Slurm accounting storage is disabled\n")
    fake = FakeRunner({"scontrol": [Completed(1, "", "Invalid job id specified")] * 2, "sacct": [disabled]})
    slurm = Slurm(fake)
    assert slurm.final("5") is None
    assert slurm.final("5") is None
    assert [c[0] for c in fake.calls] == ["scontrol", "sacct", "scontrol"]  # sacct tried once only


def test_accounting_record_when_slurmdbd_exists() -> None:
    fake = FakeRunner({"sacct": [ok("5|CANCELLED by 0|0:15\n")]})
    info = Slurm(fake).accounting("5")
    assert info is not None and (info.state, info.exit_code) == ("CANCELLED", 143)


def test_cancel_of_a_finished_job_is_not_an_error_but_other_failures_are() -> None:
    done = "scancel: error: Kill job error on job id 5: Job/step already completing or completed"
    fake = FakeRunner(
        {
            "scancel": [
                Completed(1, "", done),
                Completed(1, "", "scancel: error: Unable to contact slurm controller"),
            ]
        }
    )
    slurm = Slurm(fake)
    slurm.cancel("5")
    with pytest.raises(SlurmError, match="Unable to contact"):
        slurm.cancel("5")


def test_environment_that_would_change_submissions_is_dropped() -> None:
    env = clean_environment({"SBATCH_PARTITION": "gpu", "SQUEUE_FORMAT": "%i", "SLURM_CONF": "/etc/s.conf", "A": "1"})
    assert env == {"SLURM_CONF": "/etc/s.conf", "A": "1"}


def test_a_hanging_command_times_out_with_its_name() -> None:
    with pytest.raises(SlurmError, match=r"sleep 5: no answer after 0.2 s"):
        SubprocessRunner().run(["sleep", "5"], timeout=0.2)


def test_a_missing_command_says_so() -> None:
    with pytest.raises(SlurmError, match="not found on PATH"):
        SubprocessRunner().run(["sbatch-does-not-exist"], timeout=5)


def test_pending_reasons_that_waiting_cannot_resolve() -> None:
    from pytest_ubench.orchestrators.slurm.commands import JobInfo

    assert JobInfo("1", "PENDING", "PartitionNodeLimit").hopeless
    assert JobInfo("1", "PENDING", "QOSMaxWallDurationPerJobLimit").hopeless
    assert not JobInfo("1", "PENDING", "Resources").hopeless
    assert not JobInfo("1", "PENDING", "QOSMaxJobsPerUserLimit").hopeless  # frees up when other jobs end
    assert not JobInfo("1", "RUNNING", "PartitionNodeLimit").hopeless


def test_a_controller_that_stops_answering_is_a_service_error_and_the_job_is_cancelled(tmp_path: Path) -> None:
    from pytest_ubench.orchestrators.base import ServiceError
    from pytest_ubench.orchestrators.slurm import SlurmOrchestrator
    from pytest_ubench.recipes.deployment import ServiceSpec

    class Hanging(FakeRunner):
        def run(self, argv: Sequence[str], timeout: float) -> Completed:
            if argv[0] in ("squeue", "scontrol"):
                self.calls.append(list(argv))
                raise SlurmError(f"{' '.join(argv)}: no answer after {timeout:g} s (is slurmctld reachable?)")
            return super().run(argv, timeout)

    runner = Hanging({"sbatch": [ok("12\n")], "scancel": [ok()]})
    orch = SlurmOrchestrator(slurm=Slurm(runner, timeout_s=1.0))
    with pytest.raises(ServiceError, match="no answer after 1 s"):
        orch.deploy(ServiceSpec(command=["true"]), "svc", tmp_path / "svc")
    assert ["scancel", "12"] in runner.calls  # nothing left queued
