"""Talking to Slurm through its command-line tools; nothing here knows about recipes or pytest."""
