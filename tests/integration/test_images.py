"""Container images pulled ahead of the jobs that run them, on the submitting node: once, under a lock,
and on request (``ubenchai image pull``, ``--ubench-pull-only``). Apptainer cannot be installed here; these
tests put its named test double (tests/doubles/apptainer) on PATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pytest_ubench.orchestrators import apptainer
from pytest_ubench.orchestrators.base import ServiceError

REPO = Path(__file__).resolve().parents[2]


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_concurrent_runs_pull_an_image_once(tmp_path: Path, apptainer_double: Path, monkeypatch: pytest.MonkeyPatch):
    """Four runs that need the same image at once: one pull (the file lock), all four get the file."""
    monkeypatch.setenv("APPTAINER_DOUBLE_PULL_S", "0.5")
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: apptainer.pull("docker://example.org/big:2", tmp_path / "c"), range(4)))
    assert len(set(got)) == 1 and got[0].read_text().startswith("apptainer test double image")
    assert [c["argv"][0] for c in calls(apptainer_double)] == ["pull"]
    assert not list((tmp_path / "c").glob("*.tmp"))


def test_every_kind_of_image_reference_is_pulled_to_a_file_of_its_own(tmp_path: Path, apptainer_double: Path) -> None:
    """docker://, oras:// and library:// references go to Apptainer as given, each into its own .sif in the
    cache; a local .sif is used in place and nothing is pulled for it."""
    refs = ["docker://vllm/vllm-openai:v0.6.3", "oras://ghcr.io/site/vllm:v0.6.3", "library://site/default/vllm:0.6.3"]
    got = [apptainer.pull(ref, tmp_path / "c") for ref in refs]
    assert len(set(got)) == 3 and all(p.parent == tmp_path / "c" and p.suffix == ".sif" for p in got)
    assert [c["argv"][-1] for c in calls(apptainer_double)] == refs
    local = tmp_path / "mine.sif"
    local.write_text("an image of the site's own")
    assert apptainer.pull(str(local), tmp_path / "c") == local and len(calls(apptainer_double)) == 3


def test_a_failed_pull_names_the_image_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apptainer").write_text("#!/bin/sh\necho 'FATAL: manifest unknown' >&2\nexit 255\n")
    (bin_dir / "apptainer").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ServiceError, match=r"^cannot pull docker://example.org/nope:1 with apptainer: FATAL: manifest"):
        apptainer.pull("docker://example.org/nope:1", tmp_path / "c")
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["example.org_nope_1.sif.lock"]
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ServiceError, match="neither apptainer nor singularity is on PATH"):
        apptainer.pull("docker://example.org/nope:1", tmp_path / "c")
    with pytest.raises(ServiceError, match=r"image /no/such.sif: no such file"):
        apptainer.pull("/no/such.sif", tmp_path / "c")


def test_image_pull_and_pull_only_fetch_what_the_recipes_need(tmp_path: Path, apptainer_double: Path) -> None:
    """``ubenchai image pull`` and ``pytest --ubench-pull-only``: each MeluXina image once, into the image
    cache, nothing deployed; a second pull finds the files."""
    env = os.environ | {"UBENCHAI_IMAGE_CACHE": str(tmp_path / "images")}
    pulled = subprocess.run(
        [sys.executable, "-m", "pytest_ubench", "image", "pull", "meluxina/vllm", "vllm-ray-meluxina",
         "meluxina/ollama"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.splitlines() == [
        f"docker://vllm/vllm-openai:v0.6.3 {tmp_path / 'images' / 'vllm_vllm-openai_v0.6.3.sif'}",
        f"docker://ollama/ollama:0.4.7 {tmp_path / 'images' / 'ollama_ollama_0.4.7.sif'}",
    ]
    assert [c["argv"][-1] for c in calls(apptainer_double)] == ["docker://vllm/vllm-openai:v0.6.3",
                                                               "docker://ollama/ollama:0.4.7"]  # fmt: skip
    out = tmp_path / "out"
    again = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "-p", "no:cacheprovider", "--ubench-recipe=meluxina/triton",
         "--ubench-recipe=meluxina/vllm", "--ubench-pull-only", f"--ubench-output={out}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "docker://nvcr.io/nvidia/tritonserver:24.10-py3" in again.stdout and "pull only" in again.stderr
    assert [c["argv"][-1] for c in calls(apptainer_double)][2:] == ["docker://nvcr.io/nvidia/tritonserver:24.10-py3"]
    assert not out.exists()
    plain = subprocess.run([sys.executable, "-m", "pytest_ubench", "image", "pull", "llm-inference"], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert plain.returncode == 0 and "no container images" in plain.stdout


def test_the_pytest_dry_run_prints_the_batch_script_and_pulls_nothing(tmp_path: Path, apptainer_double: Path):
    env = os.environ | {"UBENCHAI_IMAGE_CACHE": str(tmp_path / "images"), "SBATCH_ACCOUNT": "p200009"}
    shown = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "-p", "no:cacheprovider", "--ubench-recipe=vllm-meluxina",
         "--ubench-cluster=meluxina", "--ubench-dry-run", f"--ubench-output={tmp_path / 'out'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout[-2000:] + shown.stderr[-2000:]
    assert shown.stdout.startswith("# --- vllm-meluxina (slurm) ---\n#!/bin/bash -l\n")
    assert "#SBATCH --account=p200009\n" in shown.stdout and "dry run: nothing was deployed" in shown.stderr
    assert calls(apptainer_double) == [] and not (tmp_path / "out").exists()
