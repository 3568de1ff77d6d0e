"""The Slurm orchestrator on a real Slurm cluster (ci/slurm's two nodes on this host, or one already up).

Every test checks that nothing it submitted is left in the queue. Apptainer cannot run here; the one
test that needs it puts the named test double (tests/doubles/apptainer) on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import TRUTH, pid_alive, record_rows, truth_recipe

from pytest_ubench.orchestrators.base import ServiceError, ServiceState
from pytest_ubench.orchestrators.health import deploy_healthy as deploy
from pytest_ubench.orchestrators.slurm import SlurmOrchestrator
from pytest_ubench.recipes import loader
from pytest_ubench.recipes.deployment import ServiceSpec

pytestmark = [pytest.mark.integration, pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

REPO = Path(__file__).resolve().parents[2]
PROFILE = loader.load_cluster(REPO / "recipes" / "clusters" / "ci-slurm.yaml")


def active_jobs(name: str) -> list[str]:
    """Jobs with this name that Slurm still counts as pending or running."""
    out = subprocess.run(
        ["squeue", "-h", "-n", name, "-o", "%i %T"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return out.splitlines()


def wait_gone(name: str, timeout_s: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (jobs := active_jobs(name)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return jobs


def orch(**kw: object) -> SlurmOrchestrator:
    return SlurmOrchestrator(PROFILE, **kw)  # type: ignore[arg-type]


def test_llm_inference_recipe_benchmarked_through_slurm(tmp_path: Path) -> None:
    """The main job's recipe with --ubench-orchestrator=slurm: service and Prometheus are batch jobs."""
    override = tmp_path / "short.yaml"
    override.write_text(
        yaml.safe_dump({"workload": {"duration_s": 3, "warmup_s": 1, "load": {"mode": "closed", "concurrency": [2]}}})
    )
    out = tmp_path / "o"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "-p", "no:cacheprovider", "--ubench-recipe=llm-inference",
         f"--ubench-override={override}", "--ubench-cluster=ci-slurm", f"--ubench-output={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "llm-inference-concurrency=2" / "results.json").read_text())
    assert result["passed"] and result["requests"]["ok"] > 0
    endpoint = json.loads((out / "services" / "llm-inference" / "endpoint.json").read_text())
    assert endpoint["job_id"] and endpoint["node"]
    assert "#SBATCH --partition=debug" in (out / "services" / "llm-inference" / "job.sbatch").read_text()
    if result["monitoring"] and "note" not in result["monitoring"]:  # Prometheus on PATH: it ran as a job too
        assert (out / "prometheus" / "job.sbatch").exists()
        assert result["server_metrics"]["output_tokens_per_s"]["max"] > 0
        # the node exporter runs in the service's own job, on its node (no allocation of its own)
        script = (out / "services" / "llm-inference" / "job.sbatch").read_text()
        assert 'node-exporter --web.listen-address="$bind_host":"$port_node_exporter"' in script
        exporter = json.loads((out / "services" / "llm-inference" / "node_exporter.json").read_text())
        assert exporter["node"] == endpoint["node"] and not (out / "node-exporter").exists()
        assert result["server_metrics"]["cpu_busy"]["max"] > 0
    assert wait_gone("ubench-llm-inference") == [] and wait_gone("ubench-prometheus") == []


def test_a_job_that_fails_at_start_reports_state_exit_code_and_log_tail(tmp_path: Path) -> None:
    spec = ServiceSpec(command=["sh", "-c", "echo boom-at-start >&2; exit 3"])
    with pytest.raises(ServiceError) as err:
        deploy(orch(), spec, "failstart", tmp_path / "svc")
    message = str(err.value)
    assert "exited with code 3" in message and "FAILED" in message and "exit code 3" in message
    assert "boom-at-start" in message
    assert wait_gone("ubench-failstart") == []


def test_a_request_the_cluster_cannot_satisfy_is_refused_at_submission(tmp_path: Path) -> None:
    spec = ServiceSpec(command=[*TRUTH], resources={"memory": "999999G"})
    with pytest.raises(ServiceError, match=r"cannot submit .*job\.sbatch: sbatch: error: Memory specification"):
        deploy(orch(), spec, "toobig", tmp_path / "svc")
    assert active_jobs("ubench-toobig") == []


def test_a_job_that_can_never_start_ends_the_wait_at_once(tmp_path: Path) -> None:
    spec = ServiceSpec(command=[*TRUTH], resources={"nodes": 9}, multinode={"worker": ["true"]})  # there are 2
    t0 = time.monotonic()
    with pytest.raises(
        ServiceError, match=r"PENDING \((PartitionNodeLimit|PartitionConfig)\): the job can never start"
    ):
        deploy(orch(), spec, "nevers", tmp_path / "svc")
    assert time.monotonic() - t0 < 30
    assert wait_gone("ubench-nevers") == []


def test_a_job_stuck_in_the_queue_names_its_reason_and_is_cancelled(tmp_path: Path) -> None:
    spec = ServiceSpec(command=[*TRUTH], resources={"sbatch": ["--begin=now+3600"]})
    with pytest.raises(ServiceError, match=r"still PENDING \(BeginTime\) after 1.5 s; cancelled"):
        deploy(SlurmOrchestrator(PROFILE.model_copy(update={"queue_timeout_s": 1.5})), spec, "stuck", tmp_path / "svc")
    assert wait_gone("ubench-stuck") == []


def test_the_users_sbatch_variables_and_a_reservation_place_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SBATCH_RESERVATION from the user's shell is honoured: a reservation of node n2 alone, so the job can
    only run there. SBATCH_PARTITION names no partition, but the profile's wins, so the job runs."""
    name = f"ubench-test-{os.getpid()}"
    subprocess.run(["scontrol", "create", "reservation", f"ReservationName={name}", "Users=root", "StartTime=now",
                    "Duration=10", "Nodes=n2"], check=True, capture_output=True, timeout=30)  # fmt: skip
    try:
        monkeypatch.setenv("SBATCH_RESERVATION", name)
        monkeypatch.setenv("SBATCH_PARTITION", "no-such-partition")
        dep = deploy(orch(), ServiceSpec(command=[*TRUTH]), "reserved", tmp_path / "svc")
        try:
            assert dep.endpoint.slurm_node == "n2"
            text = (tmp_path / "svc" / "job.sbatch").read_text()
            assert f"#SBATCH --reservation={name}\n" in text and "#SBATCH --partition=debug\n" in text
            assert "# from the submitting shell: SBATCH_RESERVATION\n" in text
        finally:
            orch().stop(dep)
    finally:
        subprocess.run(["scontrol", "delete", f"ReservationName={name}"], check=False, capture_output=True, timeout=30)
    assert wait_gone("ubench-reserved") == []


def test_the_queue_timeout_is_an_option(tmp_path: Path, write_recipe) -> None:
    """``--queue-timeout`` (``--ubench-queue-timeout``) over the profile's hour: a job held in the queue is
    cancelled after it, with its reason, and the command exits 3."""
    path = write_recipe(truth_recipe("held"), "held")
    done = subprocess.run(
        [sys.executable, "-m", "pytest_ubench", "server", "start", "--recipe", str(path), "--cluster", "ci-slurm",
         "--queue-timeout", "2", "--set", "service.resources.sbatch=[--begin=now+3600]", "--output", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert re.search(r"held: job \d+ still PENDING \(BeginTime\) after 2 s; cancelled", done.stderr), done.stderr
    assert wait_gone("ubench-held") == []


def test_hostile_recipe_values_are_inert_in_a_real_job(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    hostile = [f"; touch {pwned} #", f"$(touch {pwned})", f"`touch {pwned}`", "it's", "a\nb"]
    record = (
        "import json,os,sys; json.dump(sys.argv[3:], open(sys.argv[1], 'w'));"
        "os.execv(sys.executable, [sys.executable, '-m', 'pytest_ubench.testing.truthserver', '--port', sys.argv[2]])"
    )
    spec = ServiceSpec(command=["{python}", "-c", record, "{run_dir}/seen.json", "{port}", *hostile])
    o = orch()
    dep = deploy(o, spec, "hostile", tmp_path / "svc")
    try:
        assert o.status(dep) == ServiceState.RUNNING
        assert json.loads((dep.run_dir / "seen.json").read_text()) == hostile
        assert not pwned.exists()
    finally:
        o.stop(dep)
    assert active_jobs("ubench-hostile") == []


def test_apptainer_runtime_in_a_job_with_the_test_double(
    tmp_path: Path, apptainer_double: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image is pulled once, on the submitting node before sbatch, into the profile's cache (Apptainer's
    layer cache beside it); the jobs only run it; the host's secrets do not reach the container."""
    monkeypatch.setenv("UB_HOST_SECRET", "do-not-leak")
    profile = PROFILE.model_copy(update={"image_cache": str(tmp_path / "images")})
    o = SlurmOrchestrator(profile)
    for attempt in range(2):
        dep = deploy(o, _container_spec(), "container", tmp_path / f"svc{attempt}")
        o.stop(dep)
    env = json.loads((tmp_path / "svc0" / "env.json").read_text())
    assert env["MODE"] == "in-container" and "UB_HOST_SECRET" not in env
    calls = [json.loads(line) for line in apptainer_double.read_text().splitlines()]
    assert [(c["argv"][0], c["in_job"]) for c in calls] == [("pull", False), ("exec", True), ("exec", True)]
    assert calls[0]["cachedir"] == str(tmp_path / "images" / "cache")
    assert calls[1]["argv"][:4] == ["exec", "--cleanenv", "--bind", "/tmp"] and "--nv" not in calls[1]["argv"]
    assert calls[1]["argv"][4] == str(tmp_path / "images" / "example.org_ubench_truth_1.sif")
    assert " pull --force" not in (tmp_path / "svc0" / "job.sbatch").read_text()
    assert wait_gone("ubench-container") == []


def _container_spec() -> ServiceSpec:
    dump = (
        "import json,os,sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'));"
        "os.execv(sys.executable, [sys.executable, '-m', 'pytest_ubench.testing.truthserver', '--port', sys.argv[2]])"
    )
    return ServiceSpec(
        runtime="apptainer",
        container={"image": "docker://example.org/ubench/truth:1", "binds": ["/tmp"]},
        command=["{python}", "-c", dump, "{run_dir}/env.json", "{port}"],
        env={"MODE": "in-container"},
    )


def test_singularity_where_apptainer_is_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An older site: only ``singularity`` (the test double under that name). It pulls, it runs the job, and
    the recipe's env reaches the container through SINGULARITYENV_*."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "singularity").symlink_to(REPO / "tests" / "doubles" / "apptainer")
    assert shutil.which("apptainer") is None
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("APPTAINER_DOUBLE_LOG", str(tmp_path / "calls.jsonl"))
    o = SlurmOrchestrator(PROFILE.model_copy(update={"image_cache": str(tmp_path / "images")}))
    o.stop(deploy(o, _container_spec(), "singular", tmp_path / "svc"))
    assert json.loads((tmp_path / "svc" / "env.json").read_text())["MODE"] == "in-container"
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [(c["tool"], c["argv"][0], c["in_job"]) for c in calls] == [("singularity", "pull", False),
                                                                       ("singularity", "exec", True)]  # fmt: skip
    assert calls[0]["cachedir"] == str(tmp_path / "images" / "cache")
    assert wait_gone("ubench-singular") == []


def test_ctrl_c_mid_run_leaves_the_queue_empty(tmp_path: Path, write_recipe) -> None:
    recipe = truth_recipe("slurmint", duration_s=60.0)
    path = write_recipe(recipe, "slurmint")
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "benchmarks/", "-p", "no:cacheprovider", f"--ubench-recipe={path}",
         "--ubench-cluster=ci-slurm", f"--ubench-output={out}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        endpoint = out / "services" / "slurmint" / "endpoint.json"
        deadline = time.monotonic() + 60
        while not endpoint.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert endpoint.exists(), proc.communicate(timeout=30)[0][-3000:]
        time.sleep(2.0)  # load is running
        assert len(active_jobs("ubench-slurmint")) == 1
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:  # the test failed before its Ctrl-C: still give pytest its teardown
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert proc.returncode == 2, output[-3000:]
    assert active_jobs("ubench-slurmint") == []
    partial = out / "slurmint-concurrency=2" / "results.json"
    assert json.loads(partial.read_text())["aborted"] == "interrupted"


def test_cli_registry_works_across_invocations(tmp_path: Path, write_recipe) -> None:
    env = dict(os.environ, UBENCHAI_STATE_DIR=str(tmp_path / "state"))
    path = write_recipe(truth_recipe("slurmcli"), "slurmcli")

    def ubenchai(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pytest_ubench", *args],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    started = ubenchai("server", "start", "--recipe", str(path), "--cluster", "ci-slurm", "--output", str(tmp_path))
    assert started.returncode == 0, started.stderr
    service_id, url = started.stdout.split()
    try:
        assert len(active_jobs("ubench-slurmcli")) == 1
        status = ubenchai("server", "status", service_id)
        assert status.returncode == 0 and "running, health ok" in status.stdout, status.stdout + status.stderr
        assert "ubench: service started" in ubenchai("server", "logs", service_id).stdout
        listed = ubenchai("server", "list")
        assert service_id in listed.stdout and "running" in listed.stdout
        run = ubenchai("client", "run", "--recipe", str(path), "--target", url, "--output", str(tmp_path / "run"))
        assert run.returncode == 0, run.stderr
    finally:
        stopped = ubenchai("server", "stop", service_id)
    assert stopped.returncode == 0 and active_jobs("ubench-slurmcli") == []
    assert ubenchai("server", "status", service_id).returncode == 2


def test_dry_run_prints_the_script_and_submits_nothing(tmp_path: Path, write_recipe) -> None:
    path = write_recipe(truth_recipe("slurmdry"), "slurmdry")
    done = subprocess.run(
        [sys.executable, "-m", "pytest_ubench", "server", "start", "--recipe", str(path), "--cluster", "ci-slurm",
         "--dry-run", "--output", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("#!/bin/bash\n#SBATCH --job-name=ubench-slurmdry")
    assert active_jobs("ubench-slurmdry") == [] and not (tmp_path / "services").exists()


def test_a_service_spanning_two_nodes_starts_head_then_workers_and_stops_all(tmp_path: Path) -> None:
    """Head helper on the batch node, one srun worker per other node, the service on the head node."""
    mark = (
        "import json,os,sys,time; p=os.path.join(sys.argv[1], sys.argv[2] + '-' + os.environ['SLURMD_NODENAME']);"
        "json.dump({'pid': os.getpid(), 'args': sys.argv[3:]}, open(p, 'w')); time.sleep(300)"
    )
    spec = ServiceSpec(
        command=[*TRUTH],
        resources={"nodes": 2},
        multinode={
            "head": ["{python}", "-c", mark, "{run_dir}", "head", "{nodes}"],
            "worker": ["{python}", "-c", mark, "{run_dir}", "worker", "{head}", "{nodes}"],
            "settle_s": 0.5,
        },
    )
    o = orch()
    dep = deploy(o, spec, "twonode", tmp_path / "svc")
    try:
        for _ in range(100):
            found = sorted(p.name for p in dep.run_dir.glob("*-n*"))
            if len(found) == 2:
                break
            time.sleep(0.1)
        assert found == ["head-n1", "worker-n2"]
        head = json.loads((dep.run_dir / "head-n1").read_text())
        worker = json.loads((dep.run_dir / "worker-n2").read_text())
        assert head["args"] == ["2"] and worker["args"] == ["n1", "2"]
    finally:
        o.stop(dep)
    assert wait_gone("ubench-twonode") == []
    deadline = time.monotonic() + 10
    while any(pid_alive(x["pid"]) for x in (head, worker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(head["pid"]) and not pid_alive(worker["pid"])


def test_a_job_cancelled_outside_ubenchai_is_pruned_from_the_registry(tmp_path: Path, write_recipe) -> None:
    env = dict(os.environ, UBENCHAI_STATE_DIR=str(tmp_path / "state"))
    path = write_recipe(truth_recipe("slurmstale"), "slurmstale")
    cmd = [sys.executable, "-m", "pytest_ubench"]
    started = subprocess.run(
        [*cmd, "server", "start", "--recipe", str(path), "--cluster", "ci-slurm", "--output", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    service_id = started.stdout.split()[0]
    (job,) = active_jobs("ubench-slurmstale")
    subprocess.run(["scancel", job.split()[0]], check=True, timeout=30)
    assert wait_gone("ubench-slurmstale") == []
    listed = subprocess.run([*cmd, "server", "list"], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert service_id in listed.stdout and "entry removed" in listed.stdout
    again = subprocess.run([*cmd, "server", "list"], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert service_id not in again.stdout


def test_load_clients_on_two_nodes_merge_exactly(tmp_path: Path, write_recipe) -> None:
    """2 nodes x 2 tasks split concurrency 6; the merged records are exactly the requests the server saw."""
    from pytest_ubench.recipes.sweep import expand
    from pytest_ubench.session import Services, run_case

    recipe = truth_recipe("slurmclients", load={"mode": "closed", "concurrency": 6}, duration_s=2.0)
    recipe["workload"]["orchestration"] = "slurm"
    recipe["workload"]["clients"] = {"nodes": 2, "tasks_per_node": 2}
    (case,) = expand(loader.load(write_recipe(recipe, "slurmclients")))
    with Services(tmp_path / "o", orch(), monitoring=False) as services:
        result = run_case(case, services)
        dep = services.get(case)
        truth = httpx.get(dep.endpoint.url + "/truth", timeout=10).json()
    metas = [json.loads(p.read_text()) for p in sorted((result.run_dir / "clients").glob("task-*/run.json"))]
    assert sorted((m["task"], m["node"]) for m in metas) == [(0, "n1"), (1, "n1"), (2, "n2"), (3, "n2")]
    records = record_rows(result.run_dir)
    assert len(records) == sum(m["records"] for m in metas) == len(truth)  # every request, once
    assert result.result["requests"]["ok"] == sum(1 for r in records if not r["warmup"] and r["error"] is None)
    assert result.passed, result.failure_message()
    # The merged window covers the tasks' windows, on one clock: no task's records fall far outside it.
    starts = [r["start_us"] / 1000 for r in records]
    assert max(starts) - min(starts) < (2.0 + 0.2 + 1.0) * 1000
    assert wait_gone("ubench-clients-slurmclients") == [] and wait_gone("ubench-slurmclients") == []


@pytest.mark.parametrize("skews", ["50,-50", "0,0"])
def test_client_tasks_on_skewed_clocks_merge_on_the_harness_clock(
    tmp_path: Path, write_recipe, monkeypatch: pytest.MonkeyPatch, skews: str
) -> None:
    """Two client tasks whose clocks are off by +50 and -50 ms (the skewed-clock double; 0,0 the control):
    each measures its offset to the harness's clock, and the merge puts their requests where the server
    saw them. Oracle: the truth server's own stamps of every request's arrival, on its clock (a third,
    unskewed one): matched in order, client start and server arrival differ by the request's way there,
    the same for both tasks, not by the 100 ms between the tasks' clocks."""
    from pytest_ubench.recipes.sweep import expand
    from pytest_ubench.session import Services, run_case

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests" / "doubles" / "skewed-clock"),
                                                      os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    monkeypatch.setenv("UBENCH_TEST_SKEW_MS", skews)
    recipe = truth_recipe("skewed", load={"mode": "closed", "concurrency": 4}, duration_s=2.0, warmup_s=0.0)
    recipe["workload"]["orchestration"] = "slurm"
    recipe["workload"]["clients"] = {"nodes": 2, "tasks_per_node": 1}
    (case,) = expand(loader.load(write_recipe(recipe, "skewed")))
    with Services(tmp_path / "o", orch(), monitoring=False) as services:
        result = run_case(case, services)
        url = services.get(case).endpoint.url
        truth = httpx.get(url + "/truth", timeout=10).json()
        server_clock = httpx.get(url + "/truth/clock", timeout=10).json()
    clocks = result.result["client"]["clocks"]
    injected = [float(v) for v in skews.split(",")]
    assert [c["task"] for c in clocks] == [0, 1]
    for c, skew in zip(clocks, injected, strict=True):
        assert c["offset_ms"] == pytest.approx(-skew, abs=max(1.0, 2 * c["error_ms"])), clocks
        assert abs(c["drift_ms"]) < 1.0, clocks
    records = record_rows(result.run_dir)
    assert len(records) == len(truth)
    # the merged run's start, on the harness's clock, from the run's provenance (ISO, microseconds)
    from datetime import datetime

    base = datetime.fromisoformat(result.result["provenance"]["started"]).timestamp()
    arrivals = sorted(t["received"] - server_clock["perf_counter"] + server_clock["time"] for t in truth)
    starts = sorted(base + r["start_us"] / 1000 / 1000 for r in records)
    ways = [(a - s) * 1000 for a, s in zip(arrivals, starts, strict=True)]
    # Measured here: median 0.6 ms, a few up to 12 ms (a busy 2-core host delays the server's stamp); with
    # uncorrected clocks half the requests would be 50 ms early and half 50 ms late.
    p90 = statistics.quantiles(ways, n=10)[-1]
    assert min(ways) > -2 and statistics.median(ways) < 5 and p90 < 10 and max(ways) < 40, (min(ways), p90, max(ways))


def test_xdist_workers_share_one_service_job(tmp_path: Path, write_recipe) -> None:
    path = write_recipe(truth_recipe("slurmxdist", load={"mode": "closed", "concurrency": [1, 2, 3, 4]}), "slurmxdist")
    out = tmp_path / "o"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "-p", "no:cacheprovider", "-n", "2", f"--ubench-recipe={path}",
         "--ubench-cluster=ci-slurm", f"--ubench-output={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    endpoints = {json.loads(p.read_text())["endpoint"] for p in out.glob("*/results.json")}
    assert len(list(out.glob("*/results.json"))) == 4 and len(endpoints) == 1  # one deployment for both workers
    assert wait_gone("ubench-slurmxdist") == []
    assert not (out / "services" / "slurmxdist" / "shared.json").exists()


def test_monitor_with_grafana_on_slurm(tmp_path: Path, apptainer_double: Path) -> None:
    """Prometheus and Grafana as jobs; Grafana is provisioned and has a per-run password kept out of every
    script and log. Grafana and Apptainer are test doubles here (neither can be installed)."""
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed (ci/install-services installs it as root)")
    (tmp_path / "recipes" / "monitors").mkdir(parents=True)
    (tmp_path / "recipes" / "monitors" / "watch.yaml").write_text("name: watch\nquery_sets: [node]\n")
    env = dict(
        os.environ,
        UBENCHAI_STATE_DIR=str(tmp_path / "state"),
        UBENCHAI_CONFIG_DIR=f"{tmp_path / 'recipes'}{os.pathsep}{REPO / 'recipes'}",
        UBENCHAI_IMAGE_CACHE=str(tmp_path / "images"),
        UBENCHAI_LOG_DIR=str(tmp_path / "logs"),
        APPTAINER_DOUBLE_IMAGE_PATH=str(REPO / "tests" / "doubles" / "image-bin"),
    )
    cmd = [sys.executable, "-m", "pytest_ubench", "monitor"]
    started = subprocess.run(
        [*cmd, "start", "--recipe", "watch", "--grafana", "--cluster", "ci-slurm", "--output", str(tmp_path / "o")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-3000:]
    lines = started.stdout.splitlines()
    monitor_id, prom_url = lines[0].split()
    m = re.match(r"grafana (\S+) user admin, password in (\S+)$", lines[1])
    assert m, started.stdout
    grafana_url, password_file = m.group(1), Path(m.group(2))
    try:
        assert "Grafana from your workstation: ssh -J" in started.stderr.replace("\n", " ")
        password = password_file.read_text()
        assert len(password) >= 20 and password_file.stat().st_mode & 0o777 == 0o600
        written = [p for p in (tmp_path / "o").rglob("*") if p.is_file() and p != password_file]
        written += list((tmp_path / "logs").rglob("*"))
        assert written and not [p for p in written if password in p.read_text(errors="replace")]
        sources = httpx.get(grafana_url + "/api/datasources", auth=("admin", password), timeout=10)
        assert sources.status_code == 200 and sources.json() == [{"url": prom_url, "type": "prometheus"}]
        boards = httpx.get(grafana_url + "/api/search", auth=("admin", password), timeout=10).json()
        assert [b["uid"] for b in boards] == [f"ubench-{monitor_id}"[:40]]
        assert httpx.get(grafana_url + "/api/datasources", auth=("admin", "admin"), timeout=10).status_code == 401
        assert len(active_jobs("ubench-grafana")) == 1 and len(active_jobs("ubench-prometheus")) == 1
    finally:
        stopped = subprocess.run([*cmd, "stop", monitor_id], env=env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert wait_gone("ubench-grafana") == [] and wait_gone("ubench-prometheus") == []


ADAPTED = {
    # A client library's protocol, the service and the clients both Slurm jobs on the test cluster.
    "grpc": ({"command": ["{python}", "-m", "pytest_ubench.testing.grpcserver", "--host", "{host}", "--port", "{port}"],
              "health": {"kind": "tcp"}},
             {"protocol": "grpc", "grpc": {"service": "ubench.test.Echo", "method": "Stream",
                                           "request": {"delay_ms": 5, "count": 3, "interval_ms": 2}}}),
    # The insert phase runs once, from here, before the client tasks query.
    "vector": ({"command": ["{python}", "-m", "milvus_lite", "server", "--data-dir", "{run_dir}/db", "--host", "{host}",
                            "--port", "{port}"], "health": {"kind": "tcp", "timeout_s": 60}},
               {"protocol": "vector", "stream": False,
                "vector": {"engine": "milvus", "dim": 8, "count": 500, "queries": 20, "index": "flat"}}),
}  # fmt: skip


@pytest.mark.parametrize("protocol", sorted(ADAPTED))
def test_adapter_protocols_run_as_slurm_client_tasks(tmp_path: Path, write_recipe, protocol: str) -> None:
    from pytest_ubench.recipes.sweep import expand
    from pytest_ubench.session import Services, run_case

    service, workload = ADAPTED[protocol]
    name = f"slurm{protocol}"
    recipe = {"name": name, "service": service, "slo": ["error_rate < 0.01"],
              "workload": {**workload, "load": {"mode": "closed", "concurrency": 4}, "duration_s": 2.0, "warmup_s": 0.3,
                           "orchestration": "slurm", "clients": {"nodes": 1, "tasks_per_node": 2}}}  # fmt: skip
    (case,) = expand(loader.load(write_recipe(recipe, name)))
    with Services(tmp_path / "o", orch(), monitoring=False) as services:
        result = run_case(case, services)
    metas = [json.loads(p.read_text()) for p in sorted((result.run_dir / "clients").glob("task-*/run.json"))]
    assert len(metas) == 2 and all(m["records"] > 0 for m in metas)
    r = result.result
    assert r["requests"]["ok"] > 10 and r["requests"]["failed"] == 0, r["requests"]
    if protocol == "grpc":
        assert r["throughput"]["items_per_s"] == pytest.approx(3 * r["throughput"]["requests_per_s"])
    else:
        assert r["recall"]["mean"] == 1.0 and r["phases"]["insert"]["vectors"] == 500
    assert result.passed, result.failure_message()
    assert wait_gone(f"ubench-clients-{name}") == [] and wait_gone(f"ubench-{name}") == []


def test_fio_from_every_client_task_merges_their_figures(tmp_path: Path, write_recipe) -> None:
    """2 nodes run the same fio jobs at once on files of their own; rates add up, percentiles are bounded."""
    from pytest_ubench.recipes.sweep import expand
    from pytest_ubench.session import Services, run_case

    jobs = [{"name": "paced", "rw": "randread", "bs": "4KiB", "size": "4MiB", "options": {"rate_iops": 150}}]
    recipe = {"name": "slurmfio", "slo": ["ops.paced_read.per_s > 200"],
              "workload": {"protocol": "fio", "stream": False, "fio": {"jobs": jobs}, "duration_s": 2.0,
                           "warmup_s": 0.3, "load": {"mode": "closed", "concurrency": 1},
                           "orchestration": "slurm", "clients": {"nodes": 2, "tasks_per_node": 1}}}  # fmt: skip
    (case,) = expand(loader.load(write_recipe(recipe, "slurmfio")))
    with Services(tmp_path / "o", orch(), monitoring=False) as services:
        result = run_case(case, services)
    op = result.result["ops"]["paced_read"]
    assert op["tasks"] == 2 and op["per_s"] == pytest.approx(300, rel=0.05)  # 2 tasks x 150 IOPS
    assert op["latency_ms"]["percentiles"].startswith("upper bound") and op["latency_ms"]["count"] == op["total"]
    assert sorted(p.name for p in (result.run_dir / "clients").glob("task-*.json")) == ["task-0.json", "task-1.json"]
    assert "filename_format=$jobname.${SLURM_PROCID}" in (result.run_dir / "job.fio").read_text()
    assert list((result.run_dir / "fio").iterdir()) == []  # both tasks' files removed
    assert result.passed, result.failure_message()
    assert wait_gone("ubench-clients-slurmfio") == []


def test_replicas_as_jobs_of_their_own_each_scraped_by_prometheus(tmp_path: Path) -> None:
    """recipes/llm-replicas.yaml (durations shortened) through the main job's command on the cluster: one
    replica's job, then a second job added for the next case; Prometheus (a job too) scrapes both, so its
    sum of llama.cpp's token counters equals the client's count; every job gone at the end."""
    out = tmp_path / "o"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks/", "-p", "no:cacheprovider", "--ubench-recipe=llm-replicas",
         "--ubench-set=workload.duration_s=3", "--ubench-set=workload.warmup_s=1", "--ubench-cluster=ci-slurm",
         f"--ubench-output={out}", f"--ubench-report={tmp_path / 'report.html'}"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    # The efficiency SLO judges this machine (the client shares its two cores): either verdict is a result.
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    two = json.loads((out / "llm-replicas-replicas=2-concurrency=8" / "results.json").read_text())
    service = out / "services" / "llm-replicas"
    jobs = [json.loads((d / "endpoint.json").read_text())["job_id"] for d in (service, service / "replica-1")]
    assert all(jobs) and jobs[0] != jobs[1]
    assert "#SBATCH --cpus-per-task=1" in (service / "replica-1" / "job.sbatch").read_text()
    per = two["replicas"]["per_replica"]
    assert two["replicas"]["lost"] == 0 and all(p["requests"]["ok"] > 0 for p in per), per
    assert [v["passed"] for v in two["slo"] if v["expression"] == "error_rate < 0.01"] == [True]
    check = two["monitoring"]["cross_check"]["llamacpp"]
    assert check["client"] > 0 and check["relative_difference"] <= 0.01, check
    for k, p in enumerate(per):  # each replica's own series, from its own job
        assert p["server_counts"]["llamacpp"] > 0, (k, p)
    assert sum(p["server_counts"]["llamacpp"] for p in per) == pytest.approx(check["server"], rel=0.01)
    # the sweep's figures as a user sees them: the terminal's SCALE line and the report's plot
    efficiency = two["scaling"]["efficiency"]
    assert f"x2 {two['scaling']['throughput']:.0f} tok/s (efficiency {efficiency:.2f})" in done.stdout
    report = (tmp_path / "report.html").read_text()
    assert "llm-replicas: scaling over replicas" in report and "Replicas (2, least-outstanding)" in report
    for name in ("ubench-llm-replicas", "ubench-llm-replicas-replica-1", "ubench-prometheus"):
        assert wait_gone(name) == [], name
