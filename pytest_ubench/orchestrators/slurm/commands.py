"""The few Slurm commands we need, with explicit output formats so parsing never depends on a site's
defaults: ``sbatch --parsable``, ``squeue -o``, ``scontrol show job -o``, ``scancel`` and ``sacct``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .runner import CommandRunner, SlurmError, SubprocessRunner

# Job states in which the job still holds (or waits for) resources.
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
    }
)
# PENDING reasons that no amount of waiting resolves: the request exceeds a limit of the partition,
# QOS or association that applies to this job alone, or names something the job may not use.
_HOPELESS = frozenset(
    {
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "PartitionConfig",
        "BadConstraints",
        "InvalidAccount",
        "InvalidQOS",
        "AccountNotAllowed",
        "QOSNotAllowed",
        "DependencyNeverSatisfied",
        "JobHeldAdmin",
        "JobHeldUser",
    }
)
_HOPELESS_LIMIT = re.compile(r"^(QOS|Assoc)\w*PerJob")
_GONE = ("Invalid job id", "already completing or completed", "Job has finished")
_SQUEUE_FORMAT = "%i|%T|%r|%N"


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: str
    reason: str = ""
    nodes: str = ""
    exit_code: int | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def hopeless(self) -> bool:
        """Pending for a reason that will not go away by waiting."""
        return self.state == "PENDING" and (self.reason in _HOPELESS or bool(_HOPELESS_LIMIT.match(self.reason)))

    def describe(self) -> str:
        reason = f" ({self.reason})" if self.reason and self.reason != "None" else ""
        code = f", exit code {self.exit_code}" if self.exit_code is not None else ""
        return f"job {self.job_id} {self.state}{reason}{code}"


class Slurm:
    def __init__(self, runner: CommandRunner | None = None, timeout_s: float = 30.0) -> None:
        self.runner = runner or SubprocessRunner()
        self.timeout_s = timeout_s
        self._accounting: bool | None = None  # unknown until sacct has been tried

    def _run(self, argv: Sequence[str], ok_if: Sequence[str] = ()) -> str:
        done = self.runner.run(argv, self.timeout_s)
        if done.returncode != 0 and not any(s in done.stderr for s in ok_if):
            problem = done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}"
            raise SlurmError(problem if problem.startswith(argv[0]) else f"{argv[0]}: {problem}")
        return done.stdout

    def submit(self, script: Path) -> str:
        out = self._run(["sbatch", "--parsable", str(script)])
        job_id = out.strip().splitlines()[-1].split(";")[0] if out.strip() else ""
        if not job_id.isdigit() and not re.fullmatch(r"\d+_\d+", job_id):
            raise SlurmError(f"sbatch: unexpected answer {out.strip()!r} (expected a job id)")
        return job_id

    def query(self, job_id: str) -> JobInfo | None:
        """The job as the controller knows it (finished jobs too, for ``MinJobAge``); None once purged."""
        out = self._run(["squeue", "-h", "--states=all", "-j", job_id, "-o", _SQUEUE_FORMAT], ok_if=_GONE)
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 4 and parts[0] == job_id:
                return JobInfo(job_id, parts[1], parts[2], parts[3])
        return None

    def details(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields (ExitCode, StdOut, NodeList...); empty once the job is purged."""
        out = self._run(["scontrol", "show", "job", "-o", job_id], ok_if=_GONE)
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def final(self, job_id: str) -> JobInfo | None:
        """State and exit code of a job that has ended, from the controller or else accounting."""
        fields = self.details(job_id)
        if fields.get("JobState"):
            return JobInfo(
                job_id,
                fields["JobState"],
                fields.get("Reason", ""),
                fields.get("NodeList", ""),
                _exit_code(fields.get("ExitCode", "")),
            )
        return self.accounting(job_id)

    def accounting(self, job_id: str) -> JobInfo | None:
        """``sacct``'s record, or None where accounting storage is disabled (no slurmdbd)."""
        if self._accounting is False:
            return None
        done = self.runner.run(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode"], self.timeout_s)
        if done.returncode != 0:
            if "accounting storage is disabled" in (done.stderr + done.stdout).lower():
                self._accounting = False
                return None
            raise SlurmError(f"sacct: {done.stderr.strip() or done.returncode}")
        self._accounting = True
        for line in done.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[0] == job_id:
                state = parts[1].split()[0] if parts[1] else "UNKNOWN"  # "CANCELLED by 0"
                return JobInfo(job_id, state, exit_code=_exit_code(parts[2]))
        return None

    def cancel(self, job_id: str, signal: str | None = None) -> None:
        argv = ["scancel"] + ([f"--signal={signal}", "--full"] if signal else []) + [job_id]
        self._run(argv, ok_if=_GONE)

    def hostnames(self, nodelist: str) -> list[str]:
        return self._run(["scontrol", "show", "hostnames", nodelist]).split()


def _exit_code(text: str) -> int | None:
    """Slurm's ``rc:signal``: a job killed by a signal reports 128 + signal, like a shell."""
    m = re.fullmatch(r"(\d+):(\d+)", text.strip())
    if not m:
        return None
    rc, sig = int(m.group(1)), int(m.group(2))
    return 128 + sig if sig else rc
