"""Slurm: services as batch jobs, and jobs of tasks that run to completion, through Slurm's command-line
tools (``runner``: how a command is run; ``commands``: sbatch, squeue, scancel; ``script``: batch scripts)."""

from .orchestrator import SlurmOrchestrator, cancel_and_wait

__all__ = ["SlurmOrchestrator", "cancel_and_wait"]
