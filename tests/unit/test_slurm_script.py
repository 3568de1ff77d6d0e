"""Batch scripts: golden files for what we generate, and real bash runs for what the script does.

Set UBENCH_UPDATE_GOLDEN=1 to rewrite the golden files after an intended change (then read the diff).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from helpers import pid_alive

from pytest_ubench.orchestrators.base import ServiceError
from pytest_ubench.orchestrators.ports import PORT_FLOOR, ephemeral_floor
from pytest_ubench.orchestrators.slurm import script
from pytest_ubench.recipes import loader
from pytest_ubench.recipes.deployment import ClusterProfile, ServiceSpec

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
PLAIN = ClusterProfile(name="plain")


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UBENCH_UPDATE_GOLDEN"):
        path.write_text(text + "\n")
    assert text + "\n" == path.read_text(), f"{path} differs; UBENCH_UPDATE_GOLDEN=1 rewrites it"


def _render(
    spec: ServiceSpec, run_dir: Path, profile: ClusterProfile = PLAIN, environ: dict[str, str] | None = None
) -> str:
    names = {"name": "svc", "job_name": "ubench-svc"}
    return script.render(spec, **names, run_dir=run_dir, profile=profile, python=sys.executable, environ=environ)


@pytest.mark.parametrize(
    ("recipe_file", "expected"),
    [
        ("vllm.yaml", ["#!/bin/bash -l", "#SBATCH --gres=gpu:4", "#SBATCH --partition=gpu", '"$ctr" exec --cleanenv']),
        (
            "vllm-ray.yaml",
            ["#SBATCH --nodes=2", 'scontrol show hostnames "$SLURM_JOB_NODELIST"',
             '--address="$head_node":6379', '--pipeline-parallel-size "$nnodes"',
             '--head --port=6379 --num-gpus=4 --node-name="$head_node" --block',
             '--nodelist="$node" "$ctr" exec --cleanenv --nv --bind /mnt/tier1,/mnt/tier2,/project "$sif" ray start '
             '--address="$head_node":6379 --num-gpus=4 --node-name="$node" --block'],
        ),
    ],
)  # fmt: skip
def test_meluxina_example_scripts_match_golden(recipe_file: str, expected: list[str]) -> None:
    recipe = loader.load(ROOT / "recipes" / "meluxina" / recipe_file).recipe
    profile = loader.load_cluster(ROOT / "recipes" / "clusters" / "meluxina.yaml")
    text = script.render(
        recipe.service,
        name=recipe.name,
        job_name=f"ubench-{recipe.name}",
        run_dir=Path(f"/project/scratch/ubench/services/{recipe.name}"),
        profile=profile,
        python="/opt/ubench/bin/python",
        environ={"UBENCHAI_SLURM_ACCOUNT": "p200001"},
        key_file=Path("/home/u/.local/state/ubenchai/keys/0123abcd.key"),
    )
    _golden(f"{recipe.name}.sbatch", text)
    assert "api_key=$(cat /home/u/.local/state/ubenchai/keys/0123abcd.key) || exit 1\n" in text
    assert 'export "${ctr_env}VLLM_API_KEY"="$api_key"\nunset api_key\n' in text
    assert all(e in text for e in expected)


def test_ray_readiness_is_checked_after_the_helpers_and_before_the_service() -> None:
    """``ready: ray``: the check (ray_ready.py, given the job's node names and the timeout) runs in the
    service's container after the head and every worker started, and a failed check ends the job before
    the service command. Run by bash (python3 a function printing its arguments): the code arrives whole."""
    recipe = loader.load(ROOT / "recipes" / "meluxina" / "vllm-ray.yaml").recipe
    profile = loader.load_cluster(ROOT / "recipes" / "clusters" / "meluxina.yaml")
    text = script.render(recipe.service, name="r", job_name="ubench-r", run_dir=Path("/x"), profile=profile,
                         python="/p", environ={"UBENCHAI_SLURM_ACCOUNT": "p1"}, key_file=Path("/k"))  # fmt: skip
    check = text.index("python3 -c ")
    assert text.index("ray start --head") < text.index("ray start --address") < check < text.index("vllm serve")
    call, rest = text[check:].split(" || exit 1\n", 1)
    assert rest.startswith("setsid ")  # the service starts only past the check
    shown = subprocess.run(["bash", "-c", f"nodes=(n1 n2); python3() {{ printf '%s\\0' \"$@\"; }}; {call}"],
                           capture_output=True, text=True, check=True).stdout.split("\0")  # fmt: skip
    code = (ROOT / "pytest_ubench" / "orchestrators" / "slurm" / "ray_ready.py").read_text()
    assert shown == ["-c", code, "n1,n2", "600", ""]


def test_a_multi_node_service_needs_its_worker_command(write_recipe) -> None:
    path = write_recipe({"name": "mn", "service": {"command": ["x"], "resources": {"nodes": 2}},
                         "workload": {"load": {"concurrency": 1}}})  # fmt: skip
    with pytest.raises(loader.RecipeError, match=r"r.yaml:\d+: service: a service on 2 nodes needs a 'multinode'"):
        loader.load(path)


def test_plain_process_script_matches_golden() -> None:
    spec = ServiceSpec(
        command=["{python}", "-m", "server", "--port={port}", "--data", "{run_dir}/data"],
        env={"MODE": "fast"},
        resources={"cpus_per_task": 4, "memory": "8G", "sbatch": ["--exclusive"]},
    )
    text = script.render(
        spec, name="svc", job_name="ubench-svc", run_dir=Path("/scratch/run"), profile=PLAIN, python="/usr/bin/python3"
    )
    _golden("process-default.sbatch", text)


def test_an_account_required_by_the_profile_must_be_given() -> None:
    profile = ClusterProfile(name="site", account_required=True)
    with pytest.raises(ServiceError, match=r"requires an account.*UBENCHAI_SLURM_ACCOUNT or SBATCH_ACCOUNT"):
        _render(ServiceSpec(command=["x"]), Path("/r"), profile)
    given = _render(ServiceSpec(command=["x"]), Path("/r"), profile, {"UBENCHAI_SLURM_ACCOUNT": "p1"})
    assert "#SBATCH --account=p1" in given
    assert "#SBATCH --account=p2" in _render(ServiceSpec(command=["x"]), Path("/r"), profile, {"SBATCH_ACCOUNT": "p2"})


def test_the_users_sbatch_variables_count_below_recipe_and_profile() -> None:
    """Order: the recipe's resources, the profile, UBENCHAI_SLURM_ACCOUNT, SBATCH_*, SALLOC_*; Slurm's own
    defaults last. What came from the shell is written into the script (and said), since sbatch is run
    without those variables."""
    shell = {"SBATCH_PARTITION": "short", "SBATCH_QOS": "dev", "SALLOC_QOS": "ignored", "SALLOC_ACCOUNT": "p9",
             "SBATCH_RESERVATION": "shell-res", "SBATCH_TIMELIMIT": "00:20:00", "SBATCH_CONSTRAINT": "a100",
             "SBATCH_OUTPUT": "/elsewhere/%j.log"}  # fmt: skip
    lines = [
        ln
        for ln in _render(ServiceSpec(command=["x"]), Path("/r"), PLAIN, shell).splitlines()
        if ln.startswith(("#SBATCH", "# from"))
    ]
    assert lines == ["#SBATCH --job-name=ubench-svc", "#SBATCH --output=/r/service.log", "#SBATCH --nodes=1",
                         "#SBATCH --ntasks-per-node=1", "#SBATCH --time=00:20:00", "#SBATCH --account=p9",
                         "#SBATCH --partition=short", "#SBATCH --qos=dev", "#SBATCH --reservation=shell-res",
                         "#SBATCH --constraint=a100", "# from the submitting shell: SBATCH_TIMELIMIT, SALLOC_ACCOUNT, "
                         "SBATCH_PARTITION, SBATCH_QOS, SBATCH_RESERVATION, SBATCH_CONSTRAINT"]  # fmt: skip
    site = ClusterProfile(name="site", partition="batch", qos="default", reservation="site-res", time="02:00:00",
                          account="p1")  # fmt: skip
    text = _render(ServiceSpec(command=["x"], resources={"reservation": "mine"}), Path("/r"), site, shell)
    for line in ("--time=02:00:00", "--account=p1", "--partition=batch", "--qos=default", "--reservation=mine",
                 "--constraint=a100"):  # fmt: skip
        assert f"#SBATCH {line}\n" in text
    assert "# from the submitting shell: SBATCH_CONSTRAINT\n" in text
    assert "#SBATCH --time=01:00:00" in _render(ServiceSpec(command=["x"]), Path("/r"))  # nobody said
    with pytest.raises(ServiceError, match=r"partition \(from SBATCH_PARTITION\) 'a b' cannot go on an #SBATCH line"):
        _render(ServiceSpec(command=["x"]), Path("/r"), PLAIN, {"SBATCH_PARTITION": "a b"})


def test_a_run_directory_that_cannot_go_on_an_sbatch_line_is_refused() -> None:
    with pytest.raises(ServiceError, match="run directory"):
        _render(ServiceSpec(command=["x"]), Path("/tmp/my results"))


def test_recipe_values_that_could_break_an_sbatch_line_are_recipe_errors(write_recipe) -> None:
    path = write_recipe(
        {
            "name": "bad",
            "service": {"command": ["x"], "resources": {"partition": "gpu\n#SBATCH --uid=0", "sbatch": ["--x=$(id)"]}},
            "workload": {"load": {"concurrency": 1}},
        }
    )
    with pytest.raises(loader.RecipeError) as err:
        loader.load(path)
    assert "service.resources.partition" in str(err.value) and "service.resources.sbatch[0]" in str(err.value)


def _run(text: str, tmp: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp / "job.sbatch"
    path.write_text(text)
    return subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=60, env=env, check=False)


RECORD = "import json,os,sys; json.dump({'argv': sys.argv[1:], 'env': dict(os.environ)}, open(sys.argv[1], 'w'))"


def test_hostile_recipe_values_stay_literal_when_the_script_runs(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    hostile = [
        f"; touch {pwned} #",
        f"$(touch {pwned})",
        f"`touch {pwned}`",
        'it\'s "quoted"',
        "two\nlines",
        "--p={port}x",
        "$HOME",
    ]
    spec = ServiceSpec(
        command=["{python}", "-c", RECORD, "{run_dir}/seen.json", *hostile],
        env={"EVIL": f"$(touch {pwned})", "REF": "${UB_SECRET_FOR_TEST}"},
    )
    text = _render(spec, tmp_path)
    assert "hunter2" not in text  # the secret is a reference in the script, not a value
    done = _run(text, tmp_path, {**os.environ, "UB_SECRET_FOR_TEST": "hunter2"})
    assert done.returncode == 0, done.stderr
    seen = json.loads((tmp_path / "seen.json").read_text())
    port = json.loads((tmp_path / "endpoint.json").read_text())["port"]
    assert PORT_FLOOR <= port < ephemeral_floor()  # no outgoing connection can hold it
    assert seen["argv"][1:] == [*hostile[:5], f"--p={port}x", "$HOME"]
    assert seen["env"]["EVIL"] == f"$(touch {pwned})" and seen["env"]["REF"] == "hunter2"
    assert not pwned.exists()
    assert (tmp_path / "exit_code").read_text() == "0\n"


def test_a_missing_secret_stops_the_job_with_its_name(tmp_path: Path) -> None:
    spec = ServiceSpec(command=["{python}", "-c", "pass", "${UB_NOT_SET_ANYWHERE}"])
    env = {k: v for k, v in os.environ.items() if k != "UB_NOT_SET_ANYWHERE"}
    done = _run(_render(spec, tmp_path), tmp_path, env)
    assert done.returncode != 0 and "UB_NOT_SET_ANYWHERE is not set" in done.stderr


def test_the_trap_takes_the_whole_service_group_down_on_sigterm(tmp_path: Path) -> None:
    # The service leaves a child behind (as a server's worker would) and then waits.
    code = "import subprocess,sys,time; subprocess.Popen(['sleep','300']); time.sleep(300)"
    spec = ServiceSpec(command=["{python}", "-c", code])
    path = tmp_path / "job.sbatch"
    path.write_text(_render(spec, tmp_path))
    job = subprocess.Popen(["bash", str(path)], stderr=subprocess.PIPE, text=True)
    endpoint = tmp_path / "endpoint.json"
    for _ in range(200):
        if endpoint.exists():
            break
        time.sleep(0.05)
    svc = json.loads(endpoint.read_text())["pid"]
    time.sleep(0.3)
    group = _group_members(svc)
    assert len(group) >= 2, group  # the service and its child
    job.send_signal(signal.SIGTERM)
    assert job.wait(15) == 143
    assert (tmp_path / "exit_code").read_text() == "143\n"
    assert not any(pid_alive(p) for p in group)


def test_a_sidecar_runs_beside_the_service_without_its_environment_and_goes_with_it(tmp_path: Path) -> None:
    """An exporter started in the service's job: on a port of its own (never the service's), its address
    written for the harness, none of the service's environment (a key the service gets stays the
    service's), and taken down by the job's end like any helper."""
    from pytest_ubench.recipes.deployment import Sidecar

    keep = "import json,os,sys,time; json.dump({'argv': sys.argv[1:], 'env': dict(os.environ)}, open(sys.argv[1], 'w')); time.sleep(300)"  # noqa: E501
    sidecar = Sidecar(name="node_exporter", command=[sys.executable, "-c", keep, str(tmp_path / "sc.json"),
                                                     "--web.listen-address={host}:{port}"])  # fmt: skip
    spec = ServiceSpec(command=["{python}", "-c", "import time; time.sleep(1)"], env={"SERVICE_ONLY": "x"},
                       sidecars=[sidecar])  # fmt: skip
    done = _run(_render(spec, tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr
    where = json.loads((tmp_path / "node_exporter.json").read_text())
    seen = json.loads((tmp_path / "sc.json").read_text())
    service_port = json.loads((tmp_path / "endpoint.json").read_text())["port"]
    assert seen["argv"][1] == f"--web.listen-address=127.0.0.1:{where['port']}" and where["port"] != service_port
    assert "SERVICE_ONLY" not in seen["env"]
    assert not any("time.sleep(300)" in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))


def _group_members(pgid: int) -> list[int]:
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
    return members


MELUXINA = sorted(p.name for p in (ROOT / "recipes" / "meluxina").glob("*.yaml"))


@pytest.mark.parametrize("recipe_file", MELUXINA)
def test_every_meluxina_recipe_renders_as_its_user_would_get_it(recipe_file: str, tmp_path: Path) -> None:
    """Only rendered, not run: running them needs a MeluXina-shaped cluster (issue 20). Each recipe validates,
    and each one that deploys a service gives the batch script `--dry-run` prints: the MeluXina profile's
    account and modules, and its image pulled by Apptainer."""
    env = os.environ | {"UBENCHAI_SLURM_ACCOUNT": "p200001"}
    path = str(ROOT / "recipes" / "meluxina" / recipe_file)

    def ubenchai(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest_ubench", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120, check=False)  # fmt: skip

    valid = ubenchai("recipe", "validate", path)
    assert valid.returncode == 0 and ": ok (" in valid.stdout, valid.stderr
    if "service" not in yaml.safe_load(Path(path).read_text()):
        return  # fio from the compute nodes themselves: nothing to deploy
    profile = str(ROOT / "recipes" / "clusters" / "meluxina.yaml")
    shown = ubenchai("server", "start", "--recipe", path, "--cluster", profile, "--dry-run")
    assert shown.returncode == 0, shown.stderr
    assert "#SBATCH --account=p200001" in shown.stdout and "module load" in shown.stdout
    assert "apptainer" in shown.stdout
    assert not (tmp_path / "ubench-results").exists()  # a dry run starts and writes nothing


def test_the_project_id_and_scratch_reach_every_path_a_recipe_names() -> None:
    """MeluXina's paths hold the project id: /project/scratch/p200001. The profile says where; recipes say
    {scratch} and {project}; the id is the account unless the profile names a project of its own."""
    profile = loader.load_cluster(ROOT / "recipes" / "clusters" / "meluxina.yaml")
    binds = ["{scratch}/db:/data", "/etc/a.crt:/b.crt:ro"]
    spec = ServiceSpec(command=["serve", "--models", "{scratch}/models"], env={"HF_HOME": "{scratch}/hf"},
                       runtime="apptainer", workdir="/project/home/{project}",
                       container={"image": "docker://x/y:1", "binds": binds})  # fmt: skip
    text = _render(spec, Path("/r"), profile, {"SBATCH_ACCOUNT": "p200042"})
    assert "sif=/project/scratch/p200042/ubenchai/images/x_y_1.sif\n" in text
    assert "--bind /mnt/tier1,/mnt/tier2,/project,/project/scratch/p200042/db:/data,/etc/a.crt:/b.crt:ro " in text
    assert "mkdir -p /project/scratch/p200042/db\n" in text and "mkdir -p /etc" not in text  # data dirs only
    assert 'export "${ctr_env}HF_HOME"=/project/scratch/p200042/hf\n' in text
    assert "serve --models /project/scratch/p200042/models </dev/null &" in text
    assert "cd /project/home/p200042 || exit 1" in text
    own = profile.model_copy(update={"project": "p300001"})
    assert "sif=/project/scratch/p300001/" in _render(spec, Path("/r"), own, {"SBATCH_ACCOUNT": "p200042"})
    with pytest.raises(ServiceError, match=r"cluster profile 'meluxina': scratch '/project/scratch/\{project\}' names "
                                           r"a value that is not known here"):  # fmt: skip
        _render(spec, Path("/r"), profile.model_copy(update={"account_required": False}))
    with pytest.raises(ServiceError, match=r"unknown placeholder \{scratch\}"):
        _render(spec, Path("/r"), PLAIN)  # a profile without scratch: the recipe's {scratch} is refused


def test_a_sites_own_copy_of_an_image_is_used_in_place_of_the_recipes(tmp_path: Path) -> None:
    """``images`` in the profile: a .sif the site already has (or a mirror) stands for the recipe's reference;
    nothing is pulled for it, and the recipe is unchanged."""
    from pytest_ubench.orchestrators.slurm import SlurmOrchestrator

    local = tmp_path / "vllm-0.6.3.sif"
    local.write_text("an image")
    site = ClusterProfile(name="site", images={"docker://vllm/vllm-openai:v0.6.3": str(local)})
    spec = ServiceSpec(command=["vllm", "serve", "m"], runtime="apptainer",
                       container={"image": "docker://vllm/vllm-openai:v0.6.3"})  # fmt: skip
    assert f"sif={local}\n" in _render(spec, Path("/r"), site)
    assert SlurmOrchestrator(site).pull("docker://vllm/vllm-openai:v0.6.3") == local
    with pytest.raises(ServiceError, match=r"image /gone.sif: no such file"):
        SlurmOrchestrator(site.model_copy(update={"images": {"docker://a/b:1": "/gone.sif"}})).pull("docker://a/b:1")
