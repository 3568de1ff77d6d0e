"""The shipped MeluXina recipes run as their users run them, on a MeluXina-shaped cluster.

The cluster is ci/slurm's, with MeluXina's shape: `cpu` and `gpu` partitions whose jobs Slurm itself
refuses without a project account and a QOS (job_submit/lua), 4 GPUs per node counted by Slurm (no
devices: no GPU is here), `module load` through Lmod (module files that are named test doubles), and
scratch under the project id. The harness runs as on a login node of its own (a UTS namespace
named login1). The profile is the shipped MeluXina profile with what cannot be the same here swapped, and
nothing else: scratch and image cache under the test's directory, and each image mapped
(`images:`) to a stand-in the Apptainer test double runs (Apptainer cannot be installed here). The recipe
files are used as shipped; only durations are shortened.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import record_rows

pytestmark = [pytest.mark.integration, pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

REPO = Path(__file__).resolve().parents[2]
DOUBLES = REPO / "tests" / "doubles"
# The stand-in for each image a MeluXina recipe names: tests/doubles/images/<name>/ holds its programs,
# and the image file (written here) the environment it gives them, and any program it has at an absolute
# path (FILE lines of the Apptainer double).
STAND_INS = {
    "docker://vllm/vllm-openai:v0.6.3": ("vllm", []),
    "docker://ollama/ollama:0.4.7": ("ollama", []),
    "docker://nvcr.io/nvidia/tritonserver:24.10-py3": ("tritonserver", ["ENV UBENCH_V2_MODEL=resnet50"]),
    "docker://milvusdb/milvus:v2.4.15": ("milvus", []),
    "docker://qdrant/qdrant:v1.12.4": ("qdrant", [f"FILE /qdrant/qdrant={DOUBLES / 'images' / 'qdrant' / 'qdrant'}"]),
    "docker://minio/minio:RELEASE.2024-11-07T00-52-20Z": ("minio", []),
    # monitoring, from the images the MeluXina profile names (its nodes have no Prometheus)
    "docker://prom/prometheus:v2.54.1": ("prometheus", []),
    "docker://prom/node-exporter:v1.8.2": ("node_exporter", []),
    "docker://nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04": ("dcgm_exporter", []),
}


def vllm_image() -> list[str]:
    """What the vLLM image has beside `vllm`: the vLLM venv's `python3` and `ray` (the stand-in's own
    `vllm` comes first on PATH), Ray's files in a directory of this run with a path short enough for its
    sockets, and no usage report."""
    from pytest_ubench.servers.vllm import vllm_python

    python = vllm_python()
    if python is None:
        pytest.skip("vLLM is not installed: python -m pytest_ubench.servers.vllm --install")
    return [f"PATH={Path(python).parent}", "ENV RAY_USAGE_STATS_ENABLED=0"]


def meluxina_here(tmp_path: Path, ray_tmp: Path | None = None) -> tuple[Path, dict[str, str]]:
    """The MeluXina profile for this cluster, and the environment of a user logged in to it."""
    profile = yaml.safe_load((REPO / "recipes" / "clusters" / "meluxina.yaml").read_text())
    project = tmp_path / "project"
    images = tmp_path / "site-images"
    images.mkdir()
    for name, extra in STAND_INS.values():
        if name == "vllm":
            extra = [*vllm_image(), *extra, *([f"ENV RAY_TMPDIR={ray_tmp}"] if ray_tmp else [])]
        # PATH lines of the image first: the double puts each later one in front, the stand-in's last
        lines = [*extra, f"PATH={DOUBLES / 'images' / name}", f"ENV UBENCH_PYTHON={sys.executable}"]
        (images / f"{name}.sif").write_text("\n".join(lines) + "\n")
    profile |= {
        "name": "meluxina-here",
        "scratch": f"{project}/scratch/{{project}}",
        "image_cache": f"{project}/scratch/{{project}}/ubenchai/images",
        "images": {image: str(images / f"{name}.sif") for image, (name, _) in STAND_INS.items()},
    }
    path = tmp_path / "meluxina-here.yaml"
    path.write_text(yaml.safe_dump(profile))
    env = dict(
        os.environ,
        UBENCHAI_SLURM_ACCOUNT="p200001",
        USER=getpass.getuser(),  # a login shell sets it (a CI container may not); the fio recipe's paths use it
        HF_TOKEN="unused-here",  # the recipe reads it (gated models); the stand-in downloads nothing
        MODULEPATH=str(REPO / "tests" / "modulefiles"),
        PATH=f"{DOUBLES}{os.pathsep}{os.environ['PATH']}",  # the login shell has the Apptainer module loaded
        UBENCHAI_STATE_DIR=str(tmp_path / "state"),
        UBENCHAI_LOG_DIR=str(tmp_path / "logs"),
        APPTAINER_DOUBLE_LOG=str(tmp_path / "apptainer-calls.jsonl"),
    )
    return path, env


def on_login_node(argv: list[str]) -> list[str]:
    """``argv`` run as on a login node of its own: in a UTS namespace named ``login1`` (root: CI is), so the
    harness's host is not the compute nodes' (here all ``vm``), and a service or Prometheus reachable
    only from its own node fails as it would on MeluXina."""
    return ["unshare", "--uts", "sh", "-c", 'hostname login1 && exec "$@"', "sh", *argv]


def run_as_shipped(
    recipe: str, tmp_path: Path, seconds: float, sizes: dict[str, object] | None = None,
    secrets: dict[str, str] | None = None, ray_tmp: Path | None = None,
) -> tuple[Path, list[dict]]:  # fmt: skip
    """The main job's command on one MeluXina recipe, durations shortened (and ``sizes``: the data a run
    works through, where the shipped size would take this 2-core machine hours or its whole disk): the
    output directory and each case's results. ``secrets``: what the recipe's comments tell its user to
    export. Every case must have been measured and judged (exit 1: an SLO failed, which on 2 CPU cores
    standing in for GPUs is the expected verdict for some)."""
    profile, env = meluxina_here(tmp_path, ray_tmp)
    env |= secrets or {}
    out = tmp_path / "out"
    shortened = [f"--ubench-set={path}={json.dumps(value)}" for path, value in (sizes or {}).items()]
    done = subprocess.run(
        on_login_node([sys.executable, "-m", "pytest", "benchmarks/", "-p", "no:cacheprovider",
                       f"--ubench-recipe={recipe}", f"--ubench-cluster={profile}",
                       f"--ubench-set=workload.duration_s={seconds}", "--ubench-set=workload.warmup_s=0", *shortened,
                       f"--ubench-output={out}", f"--ubench-report={tmp_path / 'report.html'}"]),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout[-4000:] + done.stderr[-3000:]
    assert (tmp_path / "report.html").exists(), done.stdout[-4000:] + done.stderr[-3000:]
    assert list((tmp_path / "state" / "keys").glob("*")) == []  # a run's key goes with its service
    log = Path(env["APPTAINER_DOUBLE_LOG"])  # absent when the recipe runs no container (fio)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert all(c["argv"][0] == "exec" and c["in_job"] for c in calls), calls  # nothing pulled in a job
    results = [json.loads(p.read_text()) for p in sorted(out.glob("*/results.json"))]
    for r in results:
        assert r["requests"]["ok"] > 0 and r["requests"]["errors"] == {}, (r["case_id"], r["requests"])
        assert r["slo"] and all(isinstance(s["passed"], bool) for s in r["slo"]), r["slo"]
    return out, results


def test_vllm_meluxina_as_shipped(tmp_path: Path) -> None:
    """recipes/meluxina/vllm.yaml: vLLM on a gpu node through Apptainer, its key per run, Prometheus as a job
    beside it; every concurrency measured, judged and reported, and vLLM's own counters agree."""
    out, results = run_as_shipped("vllm-meluxina", tmp_path, 8)
    calls = [json.loads(line)["argv"] for line in (tmp_path / "apptainer-calls.jsonl").read_text().splitlines()]
    assert any("prometheus" in argv for argv in calls)  # Prometheus from its image, as a job
    script = (out / "services" / "vllm-meluxina" / "job.sbatch").read_text()
    for line in ("#!/bin/bash -l", "#SBATCH --account=p200001", "#SBATCH --partition=gpu", "#SBATCH --qos=default",
                 "#SBATCH --gres=gpu:4", "module load env/release/2024.1 Apptainer/1.3.6-GCCcore-13.3.0"):  # fmt: skip
        assert line in script, line
    assert sorted(r["case_id"] for r in results) == sorted(f"vllm-meluxina-concurrency={c}" for c in (1, 8, 32, 64))
    for r in results:
        assert {s["expression"] for s in r["slo"]} == {"ttft_ms.p95 < 1000", "itl_ms.p99 < 100", "error_rate < 0.01"}
        # vLLM's own counters, read through the Prometheus job, equal the client's counts exactly. (Its
        # latency means are compared too, and reported; on this 2-core host the API server process of a
        # service in a job of its own stalls now and then, which the client sees and vLLM's engine-side
        # histograms do not: docs/vllm.md.)
        checks = r["monitoring"]["cross_check"]
        counts = {n: c for n, c in checks.items() if c["kind"] == "count"}
        assert set(counts) == {"vllm", "vllm.output_tokens", "vllm.prompt_tokens"}, checks
        assert all(c["agrees"] and c["client"] == c["server"] > 0 for c in counts.values()), (r["case_id"], counts)


def test_vllm_ray_meluxina_as_shipped(tmp_path: Path) -> None:
    """recipes/meluxina/vllm-ray.yaml: a real Ray cluster across the job's two gpu nodes (the head on the
    first, a worker by srun on the second, each named after its Slurm node), the job waiting until Ray's own
    node list has both alive, then vLLM's Ray executor placing tensor x pipeline = 4 x 2 GPU workers on it
    (the stand-in does that placement as vLLM does, with the real Ray, then serves with the CPU vLLM). Oracles:
    Ray's placement (4 workers on each node, as only two 4-GPU nodes can hold 8), vLLM's own counters
    equal to the client's, and no Ray process left on the machine after the job."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="ubench-ray-"))  # Ray's socket paths must stay under 108 bytes
    try:
        out, results = run_as_shipped("vllm-ray-meluxina", tmp_path, 4, ray_tmp=ray_tmp)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    script = (out / "services" / "vllm-ray-meluxina" / "job.sbatch").read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --partition=gpu", "#SBATCH --gres=gpu:4"):
        assert line in script, line
    log = (out / "services" / "vllm-ray-meluxina" / "service.log").read_text()
    assert "ubench: Ray cluster ready: 2 nodes alive (n1, n2)" in log, log[-3000:]
    assert "vllm image double: Ray placed 8 GPU workers: n1 4, n2 4" in log, log[-3000:]
    assert sorted(r["case_id"] for r in results) == [f"vllm-ray-meluxina-concurrency={c}" for c in (1, 16, 64)]
    for r in results:
        counts = {n: c for n, c in r["monitoring"]["cross_check"].items() if c["kind"] == "count"}
        assert counts and all(c["agrees"] and c["client"] == c["server"] > 0 for c in counts.values()), counts
    left = subprocess.run(["pgrep", "-f", "ray/core/src/ray/(raylet|gcs)"], capture_output=True, text=True)
    assert left.stdout == "", left.stdout  # the job's end took the Ray head and worker down


def test_a_ray_node_that_never_joins_is_named(tmp_path: Path, write_recipe) -> None:
    """``multinode.ready: ray`` with a worker that never starts Ray: the job waits its timeout for Ray's
    node list to hold both nodes, then ends; the error names the node missing and the one alive (read
    from the real Ray head), the service command never ran, and nothing is left running."""
    recipe = yaml.safe_load((REPO / "recipes" / "meluxina" / "vllm-ray.yaml").read_text())
    recipe["name"] = "ray-missing"
    recipe["service"]["multinode"] |= {"worker": ["sleep", "600"], "ready_timeout_s": 12}
    path = write_recipe(recipe, "ray-missing")
    ray_tmp = Path(tempfile.mkdtemp(prefix="ubench-ray-"))
    try:
        profile, env = meluxina_here(tmp_path, ray_tmp)
        done = subprocess.run(
            [sys.executable, "-m", "pytest_ubench", "server", "start", "--recipe", str(path), "--cluster", str(profile),
             "--output", str(tmp_path / "out")],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode != 0, done.stdout
    assert "Ray nodes not joined after 12 s: n2 (alive: n1)" in done.stderr, done.stderr[-3000:]
    assert "vllm image double" not in done.stderr  # the service command never started
    left = subprocess.run(["pgrep", "-f", "ray/core/src/ray/(raylet|gcs)|sleep 600"], capture_output=True, text=True)
    assert left.stdout == "", left.stdout
    assert subprocess.run(["squeue", "-h", "-n", "ubench-ray-missing"], capture_output=True, text=True).stdout == ""


def test_ollama_meluxina_as_shipped(tmp_path: Path) -> None:
    """recipes/meluxina/ollama.yaml: the recipe's own start-up (a private server pulls the model, then the
    benchmarked one starts) on a gpu node; Ollama's native API against the truth server standing in for
    Ollama, whose own token counts and durations are the server-reported figures."""
    out, results = run_as_shipped("ollama-meluxina", tmp_path, 3)
    assert sorted(r["case_id"] for r in results) == [f"ollama-meluxina-concurrency={c}" for c in (1, 16, 4)]
    assert "#SBATCH --gres=gpu:1" in (out / "services" / "ollama-meluxina" / "job.sbatch").read_text()
    assert "success" in (out / "services" / "ollama-meluxina" / "service.log").read_text()  # the pull ran
    for r in results:
        # Ollama's own decode rate (eval_count / eval_duration) beside the client's: the double reports its
        # configured pace, so the ratio is near 1 and below it by the host's scheduling delays (a verdict on
        # this 2-core host, so only its figure is checked here)
        slo = {s["expression"]: s for s in r["slo"]}
        assert 0.5 < slo["server_reported.client_vs_server > 0.9"]["measured"] <= 1.05, slo


def test_triton_meluxina_as_shipped(tmp_path: Path) -> None:
    """recipes/meluxina/triton.yaml: KServe v2 inferences of [8, 3, 224, 224] FP32 against MLServer standing
    in for Triton; every answer checked by the protocol (outputs present), inferences counted per batch."""
    _, results = run_as_shipped("triton-meluxina", tmp_path, 4)
    assert sorted(r["case_id"] for r in results) == [f"triton-meluxina-concurrency={c}" for c in (1, 16, 4)]
    for r in results:
        assert r["throughput"]["items_per_s"] == pytest.approx(8 * r["throughput"]["requests_per_s"], rel=1e-6)


def test_node_and_gpu_exporters_run_in_the_services_job_on_each_gpu_node(tmp_path: Path, write_recipe) -> None:
    """A GPU service on two gpu nodes asking for the node and dcgm sets, on MeluXina: both exporters run from
    the profile's images inside the service's own job, on each of its nodes (a job of their own would need
    the GPUs the service holds), the DCGM one with --nv; Prometheus scrapes all four. Oracle for the dcgm
    set: the DCGM exporter double serves DCGM's own metric names with figures the test knows (4 GPUs at
    10/20/30/40 %, 1000..4000 MiB used, 100.5/110/120/130 W, on each node), so the query set's names, sums,
    means and units are checked, and that both nodes count. The recipe names its own DCGM exporter image,
    which wins over the profile's."""
    from helpers import truth_recipe

    data = truth_recipe("gpus", duration_s=2.0)
    data["service"] |= {
        "resources": {"nodes": 2, "gpus": 4},
        "host": "0.0.0.0",  # reached from the login node
        "multinode": {"worker": ["sleep", "3600"]},
    }  # the second node only holds its GPUs here
    # the recipe's own DCGM exporter image over the profile's (a site's newer build, say)
    custom = "docker://registry.example.org/site/dcgm-exporter:4.1.0"
    data["monitor"] = {"query_sets": ["node", "dcgm"], "interval_s": 0.5, "images": {"dcgm_exporter": custom}}
    path = write_recipe(data, "gpus")
    profile, env = meluxina_here(tmp_path)
    site = tmp_path / "site-images"
    shutil.copy(site / "dcgm_exporter.sif", site / "dcgm-custom.sif")
    shown = yaml.safe_load(profile.read_text())
    shown["images"][custom] = str(site / "dcgm-custom.sif")  # the site's copy of it, here a stand-in
    profile.write_text(yaml.safe_dump(shown))
    out = tmp_path / "out"
    done = subprocess.run(
        on_login_node([sys.executable, "-m", "pytest", "benchmarks/", "-p", "no:cacheprovider",
                       f"--ubench-recipe={path}", f"--ubench-cluster={profile}", f"--ubench-output={out}"]),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    (result,) = [json.loads(p.read_text()) for p in out.glob("gpus-*/results.json")]
    metrics = result["server_metrics"]
    assert metrics["cpu_busy"]["max"] > 0
    assert metrics["gpu_utilization"]["mean"] == pytest.approx(25.0)  # over the 8 GPUs of both nodes
    assert metrics["gpu_memory_used_bytes"]["mean"] == pytest.approx(2 * 10_000 * 2**20)
    assert metrics["gpu_power_watts"]["mean"] == pytest.approx(2 * 460.5)
    written = sorted(p.name for p in (out / "services" / "gpus").glob("*exporter*.json"))
    assert written == ["dcgm_exporter-n2.json", "dcgm_exporter.json", "node_exporter-n2.json", "node_exporter.json"]
    script = (out / "services" / "gpus" / "job.sbatch").read_text()
    assert "#SBATCH --partition=gpu" in script and "#SBATCH --gres=gpu:4" in script
    assert '--nv "$sif_dcgm_exporter" dcgm-exporter --address "$bind_host":"$port_dcgm_exporter"' in script
    assert f"sif_dcgm_exporter={site / 'dcgm-custom.sif'}" in script  # the recipe's image, not the profile's
    assert '"$sif_node_exporter" node_exporter --web.listen-address=' in script
    jobs = [p.name for p in out.rglob("job.sbatch")]
    assert sorted(jobs) == ["job.sbatch", "job.sbatch"]  # the service's and Prometheus's: no exporter job


def test_image_pull_fetches_monitoring_images_too(tmp_path: Path) -> None:
    """``ubenchai image pull`` on a login node: the recipe's image and, on MeluXina, Prometheus's; here each
    is the site's own copy (the profile's images), so nothing is downloaded and each file is named."""
    profile, env = meluxina_here(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "pytest_ubench", "image", "pull", "meluxina/vllm", "--cluster", str(profile)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    images = tmp_path / "site-images"
    assert done.stdout.splitlines() == [f"docker://vllm/vllm-openai:v0.6.3 {images / 'vllm.sif'}",
                                        f"docker://prom/prometheus:v2.54.1 {images / 'prometheus.sif'}"]  # fmt: skip


def never_written(secret: str, *roots: Path) -> None:
    """A secret handed over through the environment is in no file the run wrote (scripts, logs, results)."""
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def test_milvus_meluxina_as_shipped(tmp_path: Path) -> None:
    """recipes/meluxina/milvus.yaml: Milvus standalone (Milvus Lite's server standing in, on Milvus's fixed
    port) on a cpu node, its data on the project's scratch through the recipe's bind. 20,000 vectors and 300
    queries instead of 1M and 10,000 (the insert alone would take this machine most of an hour). Oracle: the
    recall of each answer against a brute-force search of the same vectors, done by the workload apart from
    Milvus; HNSW (M 16, ef 64) finds nearly all true neighbours, never more than all."""
    out, results = run_as_shipped("milvus-meluxina", tmp_path, 3,
                                  {"workload.vector.count": 20000, "workload.vector.queries": 300})  # fmt: skip
    assert sorted(r["case_id"] for r in results) == [f"milvus-meluxina-concurrency={c}" for c in (1, 32, 8)]
    script = (out / "services" / "milvus-meluxina" / "job.sbatch").read_text()
    assert "#SBATCH --partition=cpu" in script and "--gres" not in script
    assert any((tmp_path / "project" / "scratch" / "p200001" / "milvus" / "lite").iterdir())  # data on scratch
    inserted = {json.dumps(r["phases"]["insert"]) for r in results}  # once, reported by every case it served
    assert len(inserted) == 1 and json.loads(inserted.pop())["vectors"] == 20000, inserted
    for r in results:
        assert 0.9 < r["recall"]["mean"] <= 1.0, (r["case_id"], r["recall"])


def test_qdrant_meluxina_as_shipped(tmp_path: Path) -> None:
    """recipes/meluxina/qdrant.yaml: Qdrant (a stand-in for its REST API over qdrant-client's local mode,
    exact search) with the user's API key, required on every call; 10,000 vectors and 300 queries instead
    of 1M and 10,000. Oracle: recall against the workload's own brute force is exactly 1 for an exact
    search, filtered queries included; every call carried the key (no 401), which no written file holds."""
    key = "qdrant-key-of-this-test-3f9c"
    out, results = run_as_shipped("qdrant-meluxina", tmp_path, 3,
                                  {"workload.vector.count": 10000, "workload.vector.queries": 300},
                                  {"QDRANT_API_KEY": key})  # fmt: skip
    assert sorted(r["case_id"] for r in results) == [f"qdrant-meluxina-concurrency={c}" for c in (1, 32, 8)]
    assert (tmp_path / "project" / "scratch" / "p200001" / "qdrant" / "collection" / "ubench").is_dir()
    for r in results:
        assert r["recall"]["mean"] == 1.0, (r["case_id"], r["recall"])
    never_written(key, out, tmp_path / "logs", tmp_path / "state")


def test_minio_meluxina_as_shipped(tmp_path: Path) -> None:
    """recipes/meluxina/minio.yaml: MinIO (moto's S3 emulator standing in, with MinIO's liveness path and
    root credentials) with data bound onto scratch; objects of 1 MiB and 17 MiB (still multipart at the
    recipe's 16 MiB threshold) over 8 keys instead of 64 MiB over 64 (4 GiB preloaded). Oracle: every GET
    returned a whole object of one of the sizes PUT (the body's length, read by the client), and the rate per
    operation is those bytes over the run."""
    creds = {"MINIO_USER": "ubench-test-user", "MINIO_PASSWORD": "minio-secret-of-this-test-71a2"}
    smaller = {"workload.s3.object_sizes": ["1MiB", "17MiB"], "workload.s3.keys": 8}
    out, results = run_as_shipped("minio-meluxina", tmp_path, 3, smaller, creds)
    assert sorted(r["case_id"] for r in results) == [f"minio-meluxina-concurrency={c}" for c in (16, 4, 64)]
    for r in results:
        ops = r["ops"]
        records = record_rows(out / r["case_id"])
        gets = [x["bytes"] for x in records if x["op"] == "get" and not x["warmup"]]
        assert ops["put"]["total"] > 0 and ops["get"]["total"] == len(gets) > 0, ops
        assert set(gets) <= {2**20, 17 * 2**20}, set(gets)
        elapsed = r["throughput"]["elapsed_s"]
        assert ops["get"]["bytes_per_s"] == pytest.approx(sum(gets) / elapsed, rel=0.02), (ops["get"], elapsed)
    never_written(creds["MINIO_PASSWORD"], out, tmp_path / "logs", tmp_path / "state")


def test_lustre_fio_meluxina_as_shipped(tmp_path: Path) -> None:
    """recipes/meluxina/lustre-fio.yaml: fio from 8 cpu nodes at once (the test cluster's cpu partition has
    8), 4 processes each, O_DIRECT on the project's scratch (a directory here: no Lustre). Each process's
    file is 16 MiB instead of 8 GiB (fio lays every file out first: 96 files of 8 GiB do not fit this disk).
    Oracle: each job's merged rate is the sum of what the 8 tasks' own fio reports say."""
    jobs = yaml.safe_load((REPO / "recipes" / "meluxina" / "lustre-fio.yaml").read_text())["workload"]["fio"]["jobs"]
    out, results = run_as_shipped("lustre-fio-meluxina", tmp_path, 2,
                                  {"workload.fio.jobs": [j | {"size": "16MiB"} for j in jobs]})  # fmt: skip
    (r,) = results
    script = (out / r["case_id"] / "clients" / "clients.sbatch").read_text()
    assert "#SBATCH --nodes=8" in script and "#SBATCH --partition=cpu" in script  # Slurm gave it 8 nodes
    tasks = sorted((out / r["case_id"]).rglob("task-*.json"))
    assert len(tasks) == 8, tasks
    reports = [json.loads(p.read_text()) for p in tasks]
    for name, side in (("seqwrite", "write"), ("seqread", "read"), ("randread", "read")):
        op = r["ops"][f"{name}_{side}"]
        assert op["tasks"] == 8, op
        summed = sum(j[side]["bw_bytes"] for rep in reports for j in rep["jobs"] if j["jobname"] == name)
        assert op["bytes_per_s"] == pytest.approx(summed, rel=1e-6), (name, op)
    assert not any((tmp_path / "project" / "scratch" / "p200001").glob("ubench-fio-*/*"))  # files removed


def test_every_meluxina_recipe_runs_here() -> None:
    """A recipe added to recipes/meluxina/ fails this until a test above runs it as shipped."""
    tests = {name for name in globals() if name.startswith("test_") and name.endswith("_meluxina_as_shipped")}
    ran = {name.removeprefix("test_").removesuffix("_meluxina_as_shipped").replace("_", "-") for name in tests}
    assert ran == {p.stem for p in (REPO / "recipes" / "meluxina").glob("*.yaml")}


def test_a_server_without_keys_is_reached_only_through_its_key_front(tmp_path: Path) -> None:
    """meluxina/ollama kept up as a user would (``ubenchai server start``): Ollama has no API key, so the
    recipe's key_front puts a front in its job. The server (the Ollama double) listens on its node's
    loopback, the front on the node's addresses; without the run's key the front answers 401, with it
    Ollama answers; the health path stays open; the key is in no written file and goes with the service."""
    profile, env = meluxina_here(tmp_path)

    def ubenchai(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(on_login_node([sys.executable, "-m", "pytest_ubench", *args]), cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip

    out = tmp_path / "out"
    started = ubenchai("server", "start", "--recipe", "ollama-meluxina", "--cluster", str(profile), "--output",
                       str(out))  # fmt: skip
    assert started.returncode == 0, started.stderr[-3000:]
    service_id, url = started.stdout.split()[:2]
    try:
        (key_file,) = (tmp_path / "state" / "keys").iterdir()
        key = key_file.read_text().strip()
        chat = {"model": "llama3.2:3b", "messages": [{"role": "user", "content": "hi"}], "stream": False}
        assert httpx.post(url + "/api/chat", json=chat, timeout=10).status_code == 401
        answer = httpx.post(url + "/api/chat", json=chat, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert answer.status_code == 200 and answer.json()["done"] is True
        assert httpx.get(url + "/api/version", timeout=10).status_code == 200  # the health path
        script = (out / "services" / service_id / "job.sbatch").read_text()
        assert 'export "${ctr_env}OLLAMA_HOST"=127.0.0.1:"$port_backend"' in script
        assert '--listen "$bind_host":"$port" --to 127.0.0.1:"$port_backend"' in script
        never_written(key, out, tmp_path / "logs")
    finally:
        stopped = ubenchai("server", "stop", service_id)
    assert stopped.returncode == 0, stopped.stderr
    assert list((tmp_path / "state" / "keys").iterdir()) == []
