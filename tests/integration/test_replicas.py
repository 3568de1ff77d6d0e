"""A service run as replicas of the real llama.cpp server: load spread over them, each replica's figures
against its own server's counters, pinning seen by the kernel, scaling between counts, a replica killed
mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import jsonschema
import pytest
from helpers import LLAMA, SCHEMA, pid_alive

from pytest_ubench import Services, expand, run_case
from pytest_ubench import load_recipe as load
from pytest_ubench.orchestrators.replicas import Group
from pytest_ubench.recipes.loader import setting

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def llama_replicas(name: str, replicas: object, **service: object) -> dict:
    return {
        "name": name,
        "service": {
            "command": [*LLAMA, "--host", "{host}", "--parallel", "8"],
            "replicas": replicas,
            "health": {"path": "/health", "timeout_s": 120},
            "metrics_path": "/metrics",
            **service,
        },
        "workload": {
            "protocol": "openai-chat",
            "model": "tiny",
            "stream": True,
            "dataset": {"prompt_tokens": 32, "output_tokens": 32, "prompts": 64},
            "load": {"mode": "closed", "concurrency": 8},
            "duration_s": 6.0,
            "warmup_s": 1.0,
        },
        "slo": ["ttft_ms.p50 < 60000"],
    }


def predicted(url: str) -> float:
    """The replica's own count of tokens it generated (llama.cpp's /metrics)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return float(re.search(r"^llamacpp:tokens_predicted_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]


def members(services: Services, case) -> list:
    dep = services.get(case)
    return dep.handle.members if isinstance(dep.handle, Group) else [dep]


def cpus_allowed(pid: int) -> set[str]:
    """What the kernel lets each of the process's threads run on."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        status = (task / "status").read_text()
        found.add(re.search(r"^Cpus_allowed_list:\s*(\S+)$", status, re.M).group(1))  # type: ignore[union-attr]
    return found


def test_shipped_replicas_recipe_each_replica_counts_what_its_server_served_and_scaling_is_reported(tmp_path):
    """recipes/llm-replicas.yaml as shipped (durations shortened): x1, then x2 pinned a core each. Oracles:
    each replica's own token counter against the client's records of that replica; the kernel's affinity of
    every server thread; Prometheus' sum over both replicas against the client's total."""
    shipped = REPO / "recipes" / "llm-replicas.yaml"
    short = [setting(s, "--set") for s in ("workload.duration_s=5", "workload.warmup_s=1")]
    cases = expand(load(shipped, settings=short))
    assert [c.id for c in cases] == ["llm-replicas-replicas=1-concurrency=8", "llm-replicas-replicas=2-concurrency=8"]
    cores = sorted(os.sched_getaffinity(0))
    results = []
    with Services(tmp_path / "out") as services:
        for case in cases:
            reps = members(services, case)
            assert len(reps) == case.replicas
            for k, rep in enumerate(reps):  # pinned before exec: every thread of the server keeps to its core
                assert cpus_allowed(rep.endpoint.pid) == {str(cores[k])}
            before = [predicted(rep.endpoint.url) for rep in reps]
            res = run_case(case, services)
            after = [predicted(rep.endpoint.url) for rep in reps]
            jsonschema.validate(res.result, SCHEMA)
            records = res.records()
            failed = [(r.replica, r.error, r.status) for r in records if not r.ok]
            assert records and not failed, (case.id, len(records), failed[:10])
            for k in range(case.replicas):  # the client's tokens per replica = that server's own count
                assert sum(r.output_tokens or 0 for r in records if r.replica == k) == after[k] - before[k]
            # Prometheus scraped every replica: its sum over them agrees with the client's count, and each
            # replica's own series with that server's count.
            check = res.result["monitoring"]["cross_check"]["llamacpp"]
            assert check["client"] == sum(after) - sum(before) and check["relative_difference"] <= 0.01, check
            if case.replicas > 1:
                for k, each in enumerate(res.result["replicas"]["per_replica"]):
                    assert each["server_counts"]["llamacpp"] == pytest.approx(after[k] - before[k], rel=0.01), each
            results.append(res.result)
    one, two = results
    assert one["load"]["replicas"] == 1 and two["load"]["replicas"] == 2
    part = two["replicas"]
    assert part["count"] == 2 and part["lost"] == 0 and part["routing"] == "least-outstanding"
    per = part["per_replica"]
    assert per[0]["url"] == two["endpoint"] and len({p["url"] for p in per}) == 2
    assert sum(p["requests"]["ok"] for p in per) == two["requests"]["ok"]
    # least-outstanding over two equal servers: neither gets most of the load
    assert all(p["requests"]["ok"] >= 0.3 * two["requests"]["ok"] for p in per), per
    scaled = two["scaling"]
    assert scaled["reference_case"] == "llm-replicas-replicas=1-concurrency=8" and scaled["of"] == "output_tokens_per_s"
    expect = two["throughput"]["output_tokens_per_s"] / (2 * one["throughput"]["output_tokens_per_s"])
    assert scaled["efficiency"] == pytest.approx(expect) and one["scaling"]["efficiency"] == pytest.approx(1.0)
    verdict = next(v for v in two["slo"] if v["expression"] == "scaling.efficiency > 0.8")
    assert verdict["measured"] == pytest.approx(expect) and verdict["passed"] == (expect > 0.8)
    print(
        f"\nllama.cpp x1 -> x2, one core and one thread each: efficiency {scaled['efficiency']:.3f} "
        f"({one['throughput']['output_tokens_per_s']:.0f} -> {two['throughput']['output_tokens_per_s']:.0f} tok/s)"
    )


def test_a_replica_killed_mid_run_loses_only_its_requests_in_flight(write_recipe, tmp_path):
    recipe = llama_replicas("kill", 2)
    recipe["workload"]["dataset"]["output_tokens"] = 96  # long streams: some are in flight when it dies
    (case,) = expand(load(write_recipe(recipe)))
    assert case.id == "kill-replicas=2-concurrency=8"
    with Services(tmp_path / "out", monitoring=False) as services:
        reps = members(services, case)
        victim = reps[1].endpoint.pid
        before = predicted(reps[0].endpoint.url)
        killed_at: list[float] = []

        def kill() -> None:
            time.sleep(3.5)
            killed_at.append(time.time())
            os.killpg(victim, signal.SIGKILL)

        threading.Thread(target=kill, daemon=True).start()
        res = run_case(case, services)
        served = predicted(reps[0].endpoint.url) - before
        assert [m.state for m in services.members(services.get(case))] == ["running", "failed"]
    jsonschema.validate(res.result, SCHEMA)
    assert not pid_alive(victim)
    part = res.result["replicas"]
    assert part["lost"] == 1
    lost = part["per_replica"][1]
    assert lost["state"] == "failed" and lost["exit_code"] == -9
    # found dead at the first request after the kill (times: seconds after the load started)
    started = datetime.fromisoformat(res.result["provenance"]["started"]).timestamp()
    assert killed_at[0] - started - 0.01 <= lost["lost_at_s"] < killed_at[0] - started + 5.0
    records = res.records()
    failed = [r for r in records if not r.ok]
    assert failed and {r.error for r in failed} == {"replica_lost"}, {r.error for r in failed}
    assert all(r.replica == 1 for r in failed)
    assert len(failed) <= 8  # at most what was in flight: the closed loop's users
    # every later request went to the survivor, and it served each token the client counted
    assert all(r.replica == 0 and r.ok for r in records if r.start > lost["lost_at_s"])
    ok = [r for r in records if r.ok]
    assert sum(r.output_tokens or 0 for r in ok if r.replica == 0) == served
    # the verdict names the replica and when; without an SLO on replicas.lost the case fails
    verdict = next(v for v in res.result["slo"] if v["expression"] == "every replica served to the end")
    assert not verdict["passed"] and "replica 1" in verdict["note"] and "exit code -9" in verdict["note"]
    assert not res.result["passed"] and res.result["service_failure"] is None
    print(
        f"\nkilled replica 1 {killed_at[0] - started:.2f} s into the load, found lost at {lost['lost_at_s']:.2f} s; "
        f"{len(failed)} replica_lost of {len(records)} requests; replica 0 served {len(ok)} ({served:.0f} tokens)"
    )


def test_server_scale_restart_and_logs_of_a_running_service(tmp_path):
    """The seed's scale, restart and logs: each replica a real llama.cpp server, checked by its process and
    its health path, not by what the command printed."""
    import json
    import subprocess
    import sys

    env = os.environ | {"UBENCHAI_STATE_DIR": str(tmp_path / "state")}

    def ubenchai(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest_ubench", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip

    def replicas(service_id: str) -> list[dict]:
        done = ubenchai("server", "status", service_id, "--json")
        return json.loads(done.stdout)["replicas"]

    def pids(service_id: str) -> list[int]:
        entry = json.loads((tmp_path / "state" / "services" / f"{service_id}.json").read_text())
        handle = entry["handle"]
        return [r["handle"]["pid"] for r in handle["replicas"]] if "replicas" in handle else [handle["pid"]]

    out = str(tmp_path / "o")
    started = ubenchai("server", "start", "--recipe", "llm-inference", "--set", "service.replicas=2", "--output", out)
    assert started.returncode == 0, started.stderr
    service_id = started.stdout.split()[0]
    try:
        assert [r["state"] for r in replicas(service_id)] == ["running", "running"]
        scaled = ubenchai("server", "scale", service_id, "3")
        assert scaled.returncode == 0, scaled.stderr
        urls = [line.split()[-1] for line in scaled.stdout.splitlines()]
        assert len(urls) == 3 and len(set(urls)) == 3
        assert all(httpx.get(f"{u}/health", timeout=5).status_code == 200 for u in urls)
        three = pids(service_id)
        logs = ubenchai("server", "logs", service_id, "--replica", "2")
        assert logs.returncode == 0 and "llama" in logs.stdout.lower(), logs.stdout[-500:]
        assert ubenchai("server", "logs", service_id, "--replica", "5").returncode == 2
        down = ubenchai("server", "scale", service_id, "1")
        assert down.returncode == 0, down.stderr
        assert pid_alive(three[0]) and not any(pid_alive(p) for p in three[1:])  # the last two stopped
        assert len(replicas(service_id)) == 1
        restarted = ubenchai("server", "restart", service_id)
        assert restarted.returncode == 0, restarted.stderr
        (fresh,) = pids(service_id)
        assert fresh != three[0] and not pid_alive(three[0]) and pid_alive(fresh)
        url = restarted.stdout.split()[-1]
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        seen = [*three, fresh]
    finally:
        assert ubenchai("server", "stop", service_id).returncode == 0
    assert not any(pid_alive(p) for p in seen)  # nothing left running


def test_shipped_nginx_front_spreads_the_load_and_counts_each_replica(tmp_path):
    """recipes/llm-replicas-nginx.yaml as shipped (durations shortened): the clients send only to nginx.
    Oracles: each replica's own token counter against nginx's count of the requests it passed there
    (every request streams exactly its 32 tokens), and nginx's total against the client's records."""
    shipped = REPO / "recipes" / "llm-replicas-nginx.yaml"
    short = [setting(s, "--set") for s in ("workload.duration_s=4", "workload.warmup_s=1")]
    (case,) = expand(load(shipped, settings=short))
    with Services(tmp_path / "out") as services:
        dep = services.get(case)
        reps = members(services, case)
        front = dep.handle.front
        assert dep.endpoint.balanced and dep.endpoint.url == front.endpoint.url
        assert front.endpoint.url not in [r.endpoint.url for r in reps]
        before = [predicted(r.endpoint.url) for r in reps]
        res = run_case(case, services)
        after = [predicted(r.endpoint.url) for r in reps]
        nginx = front.endpoint.pid
    jsonschema.validate(res.result, SCHEMA)
    assert not pid_alive(nginx)  # stopped with the service
    records = res.records()
    assert records and all(r.ok and r.output_tokens == 32 for r in records)
    part = res.result["replicas"]
    assert part["routing"] == "front: least-outstanding" and part["lost"] == 0
    per = part["per_replica"]
    assert all(p["counted_by"] == "front" for p in per)
    for k, p in enumerate(per):  # nginx's count of what it passed to a replica = what that replica generated
        assert p["requests"]["ok"] * 32 == after[k] - before[k] and p["requests"]["ok"] > 0, (k, p, before, after)
    assert sum(p["requests"]["ok"] for p in per) == len(records)  # nginx's total = the client's, warm-up too
    check = res.result["monitoring"]["cross_check"]["llamacpp"]
    assert check["client"] == sum(after) - sum(before) and check["relative_difference"] <= 0.01, check
    for k, p in enumerate(per):  # Prometheus scraped each replica itself, not the front
        assert p["server_counts"]["llamacpp"] == pytest.approx(after[k] - before[k], rel=0.01), p
    assert res.result["endpoint"] == dep.endpoint.url
    tokens, ttft = res.result["throughput"]["output_tokens_per_s"], res.result["metrics"]["ttft_ms"]["p50"]
    passed = [p["requests"]["ok"] for p in per]
    print(f"\nnginx passed {passed} requests to the replicas; client {tokens:.0f} tok/s, TTFT p50 {ttft:.1f} ms")


def test_a_replica_that_will_not_start_names_itself_and_nothing_is_left(write_recipe, tmp_path):
    """Replica 1 exits at once (its command sees {replica}): the deployment fails naming it, and replica 0,
    which started, is stopped."""
    from helpers import TRUTH

    from pytest_ubench.orchestrators.base import ServiceError

    gate = 'if [ "$0" = 1 ]; then echo "replica $0 refuses" >&2; exit 3; fi; exec "$@"'
    recipe = {
        "name": "half",
        "service": {"command": ["sh", "-c", gate, "{replica}", *TRUTH], "replicas": 2},
        "workload": {"protocol": "openai-chat", "model": "m", "duration_s": 1.0,
                     "load": {"mode": "closed", "concurrency": 2}},
    }  # fmt: skip
    (case,) = expand(load(write_recipe(recipe)))
    with Services(tmp_path / "out", monitoring=False) as services, pytest.raises(ServiceError) as err:
        services.get(case)
    text = str(err.value)
    assert text.startswith("half-replica-1: service exited with code 3") and "replica 1 refuses" in text, text
    first = json.loads((tmp_path / "out" / "services" / "half" / "endpoint.json").read_text())
    assert not pid_alive(first["pid"])


def test_replicas_in_containers_each_with_its_own_index(write_recipe, tmp_path, apptainer_double, monkeypatch):
    """TEST DOUBLE for Apptainer (it cannot run here): the image is pulled once, each replica is an
    ``apptainer exec`` of its own, on its own port, and sees its own {replica} in its environment."""
    monkeypatch.setenv("UBENCHAI_IMAGE_CACHE", str(tmp_path / "images"))  # a pull of its own to count
    dump = (
        "import json,os,sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'));"
        "os.execv(sys.executable, [sys.executable, '-m', 'pytest_ubench.testing.truthserver', '--port', sys.argv[2]])"
    )
    recipe = {
        "name": "boxed",
        "service": {
            "runtime": "apptainer",
            "container": {"image": "docker://example.org/ubench/truth:1", "binds": ["/tmp"]},
            "command": ["{python}", "-c", dump, "{run_dir}/env.json", "{port}"],
            "env": {"WHICH": "replica {replica}"},
            "replicas": 2,
        },
        "workload": {"protocol": "openai-chat", "model": "m", "duration_s": 1.5, "warmup_s": 0.2,
                     "dataset": {"prompt_tokens": 16, "output_tokens": 8, "prompts": 8},
                     "load": {"mode": "closed", "concurrency": 4}},
    }  # fmt: skip
    (case,) = expand(load(write_recipe(recipe)))
    with Services(tmp_path / "out", monitoring=False) as services:
        res = run_case(case, services)
    jsonschema.validate(res.result, SCHEMA)
    service = tmp_path / "out" / "services" / "boxed"
    envs = [json.loads((d / "env.json").read_text()) for d in (service, service / "replica-1")]
    assert [e["WHICH"] for e in envs] == ["replica 0", "replica 1"]
    calls = [json.loads(line) for line in apptainer_double.read_text().splitlines()]
    assert [c["argv"][0] for c in calls] == ["pull", "exec", "exec"]
    ports = [c["argv"][-1] for c in calls[1:]]
    assert len(set(ports)) == 2
    per = res.result["replicas"]["per_replica"]
    # Each replica serves on a port an exec was given (the double logs from the started process, so two
    # replicas started moments apart may log in either order: a CI-like run saw them swapped)
    assert sorted(p["url"].rsplit(":", 1)[1] for p in per) == sorted(ports)
    assert all(p["requests"]["ok"] > 0 for p in per) and res.result["requests"]["failed"] == 0


def test_keyed_replicas_share_one_key_which_outlives_a_replica_that_would_not_start(write_recipe, tmp_path):
    """api_key_env: every replica checks the one key the clients send (the truth server refuses any other);
    a scale-up whose new replica dies at start leaves that key to the replicas still running."""
    from helpers import TRUTH

    from pytest_ubench.orchestrators.base import ServiceError

    gate = 'if [ "$0" = 2 ]; then exit 3; fi; exec "$@"'
    recipe = {
        "name": "keyed",
        "service": {"command": ["sh", "-c", gate, "{replica}", *TRUTH, "--api-key-env", "TRUTH_KEY"],
                    "api_key_env": "TRUTH_KEY", "replicas": [2, 3]},
        "workload": {"protocol": "openai-chat", "model": "m", "duration_s": 1.0, "warmup_s": 0.2,
                     "dataset": {"prompt_tokens": 16, "output_tokens": 8, "prompts": 8},
                     "load": {"mode": "closed", "concurrency": 4}},
    }  # fmt: skip
    two, three = expand(load(write_recipe(recipe)))
    with Services(tmp_path / "out", monitoring=False) as services:
        res = run_case(two, services)
        key_file = Path(services.get(two).endpoint.key_file)
        per = res.result["replicas"]["per_replica"]
        assert res.result["requests"]["failed"] == 0 and all(p["requests"]["ok"] > 0 for p in per)
        with pytest.raises(ServiceError, match="keyed-replica-2: service exited with code 3"):
            services.get(three)
        assert key_file.exists()  # the two running replicas still check it
        urls = json.loads((tmp_path / "out" / "services" / "keyed" / "endpoint.json").read_text())["replicas"]
        assert len(urls) == 2
        unkeyed = httpx.post(f"{urls[1]}/v1/chat/completions", json={"model": "m", "messages": []})
        assert unkeyed.status_code == 401
    assert not key_file.exists()  # gone with the service
