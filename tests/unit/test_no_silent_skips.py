"""CI's promise: green means every test ran. A test that skips because a part is missing fails under
``CI`` (tests/conftest.py), and ci/install-services stops when it cannot install what tests need."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIPPING = """
import pytest

def test_needs_a_part():
    pytest.skip("no frobnicator on PATH")

@pytest.mark.xfail(reason="known", strict=True)
def test_known_bug():
    assert False
"""


@pytest.mark.parametrize("ci", ["true", ""])
def test_a_skip_fails_in_ci_and_stays_a_skip_elsewhere(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(test_parts=SKIPPING)
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PYTHONPATH", f"{REPO / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:ubench")
    if ci:
        res.assert_outcomes(failed=1, xfailed=1)
        res.stdout.fnmatch_lines(["*skipped in CI, where every test must run: *no frobnicator on PATH*"])
    else:
        res.assert_outcomes(skipped=1, xfailed=1)


def test_install_services_fails_when_it_cannot_install(tmp_path: Path) -> None:
    """Not root (or no apt-get) and a package missing: exit 1 naming it, not a warning and a green run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "cat"):  # a PATH with nothing the script looks for, and an id that says 1000
        (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    (bin_dir / "id").unlink()
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")
    (bin_dir / "id").chmod(0o755)
    done = subprocess.run([str(bin_dir / "bash"), str(REPO / "ci" / "install-services")], capture_output=True,
                          text=True, env={"PATH": str(bin_dir)}, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "prometheus" in done.stderr and "cannot install" in done.stderr
