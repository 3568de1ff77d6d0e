"""Headless Chromium for the report's PDF (same HTML, printed) and a PNG of its first screen (for a README
or a chat message) — found on PATH, never downloaded."""

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
    _chromium(page, pdf, ["--no-pdf-header-footer", f"--print-to-pdf={pdf}"], timeout_s)


def screenshot(page: Path, png: Path, size: tuple[int, int] = (1280, 1600), timeout_s: float = 120.0) -> None:
    _chromium(page, png, [f"--window-size={size[0]},{size[1]}", "--hide-scrollbars", f"--screenshot={png}"],
              timeout_s)  # fmt: skip


def _chromium(page: Path, result: Path, args: list[str], timeout_s: float) -> None:
    binary = find()
    if binary is None:
        raise FileNotFoundError(
            f"{result.suffix[1:].upper()} needs a headless Chromium on PATH (Debian: apt-get install chromium)"
        )
    with tempfile.TemporaryDirectory(prefix="ubench-chromium-") as profile:
        done = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args, page.absolute().as_uri()],
                              capture_output=True, text=True, timeout=timeout_s, check=False)  # fmt: skip
    if done.returncode != 0 or not result.exists():
        raise RuntimeError(f"chromium could not render {page}: {done.stderr.strip()[-500:]}")
