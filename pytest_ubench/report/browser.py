"""Headless Chromium for the report's PDF (same HTML, printed) — found on PATH, never downloaded."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Offline by construction: no background traffic, no sandbox (containers, root in CI).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run")


def find() -> str | None:
    return next((p for n in NAMES if (p := shutil.which(n))), None)


def print_pdf(page: Path, pdf: Path, timeout_s: float = 120.0) -> None:
    binary = find()
    if binary is None:
        raise FileNotFoundError("PDF needs a headless Chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="ubench-chromium-") as profile:
        done = subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer", f"--print-to-pdf={pdf}",
             page.absolute().as_uri()],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
    if done.returncode != 0 or not pdf.exists():
        raise RuntimeError(f"chromium could not print {page}: {done.stderr.strip()[-500:]}")
