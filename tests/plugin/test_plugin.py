"""The pytest face, exercised with pytester in subprocesses (real services, real signals)."""

from __future__ import annotations

import html
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import pid_alive, port_open, record_rows, service_pid, truth_recipe

pytestmark = pytest.mark.integration

TEST_FILE = """
def test_llm(ubench_case, ubench):
    ubench.run(ubench_case)
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_bench=TEST_FILE)
    pytester.makeini("[pytest]\nubench_recipe_dirs = recipes\n")
    (pytester.path / "recipes").mkdir()
    return pytester


def add(pytester: pytest.Pytester, data: dict | str, name: str) -> None:
    text = data if isinstance(data, str) else yaml.safe_dump(data)
    (pytester.path / "recipes" / f"{name}.yaml").write_text(text)


def test_recipe_selection_and_sweep_ids(project):
    add(project, truth_recipe("alpha", load={"mode": "closed", "concurrency": [1, 4]}), "alpha")
    add(project, truth_recipe("beta", load={"mode": "open", "rate": [5, 2.5]}), "beta")
    res = project.runpytest_subprocess("--collect-only", "-q", "--ubench-recipe=alpha")
    res.stdout.fnmatch_lines(
        ["test_bench.py::test_llm[[]alpha-concurrency=1[]]", "test_bench.py::test_llm[[]alpha-concurrency=4[]]"]
    )
    assert "beta" not in res.stdout.str()
    res = project.runpytest_subprocess("--collect-only", "-q", "--ubench-recipe=recipes/beta.yaml")
    res.stdout.fnmatch_lines(["*test_llm[[]beta-rate=5[]]", "*test_llm[[]beta-rate=2.5[]]"])


def test_pass_and_fail_outcomes_with_measured_vs_allowed(project):
    add(project, truth_recipe("good"), "good")
    bad = truth_recipe("bad")
    bad["slo"] = ["ttft_ms.p50 < 0.001"]
    add(project, bad, "bad")
    out = project.path / "out"
    res = project.runpytest_subprocess(
        "--ubench-recipe=good", "--ubench-recipe=bad", f"--ubench-output={out}", "-p", "no:cacheprovider"
    )
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines(
        [
            "*FAIL ttft_ms.p50 < 0.001: measured *, allowed < 0.001*",
            "*ubench summary*",
            "PASSED good-concurrency=2: *ok, ttft p50 * ms*",
        ]
    )
    assert json.loads((out / "good-concurrency=2" / "results.json").read_text())["passed"] is True
    assert json.loads((out / "bad-concurrency=2" / "results.json").read_text())["passed"] is False


def test_override_file(project):
    add(project, truth_recipe("good"), "good")
    over = project.path / "over.yaml"
    over.write_text("workload:\n  load: {concurrency: [3, 5]}\n")
    res = project.runpytest_subprocess("--collect-only", "-q", "--ubench-recipe=good", f"--ubench-override={over}")
    res.stdout.fnmatch_lines(["*good-concurrency=3*", "*good-concurrency=5*"])


def test_malformed_recipe_is_one_line_not_a_traceback(project):
    add(
        project,
        "name: broken\nservice: {url: 'http://127.0.0.1:1'}\nworkload:\n  load: {mode: closed, concurrency: 0}\n",
        "broken",
    )
    res = project.runpytest_subprocess("--ubench-recipe=broken")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    path = project.path / "recipes" / "broken.yaml"
    res.stderr.fnmatch_lines([f"ERROR: {path}:4: workload.load.concurrency: input should be greater than 0, got 0"])
    assert "Traceback" not in res.stdout.str() + res.stderr.str()


def test_unreachable_target_is_an_error_not_a_failure(project):
    add(project, truth_recipe("good", load={"mode": "closed", "concurrency": [1, 2]}), "good")
    res = project.runpytest_subprocess("--ubench-recipe=good", "--ubench-target=http://127.0.0.1:9")
    res.assert_outcomes(errors=2)  # infrastructure, reported apart from SLO and regression failures
    res.stdout.fnmatch_lines(["*ERROR at setup of test_llm*", "*cannot reach http://127.0.0.1:9*"])


def test_html_report_carries_the_summary_table_and_plots_under_xdist(project):
    add(project, truth_recipe("good", load={"mode": "closed", "concurrency": [1, 2]}), "good")
    report = project.path / "report.html"
    res = project.runpytest_subprocess("--ubench-recipe=good", f"--html={report}", "--self-contained-html", "-n", "2")
    res.assert_outcomes(passed=2)
    # pytest-html 4 keeps results as an HTML-escaped JSON blob holding our (escaped) HTML table
    text = html.unescape(html.unescape(report.read_text()))
    assert text.count("<th>ttft_ms</th>") == 2 and "PASS error_rate < 0.01: measured 0" in text
    assert text.count("<svg") == 3  # each case's latency CDFs, carried on its report from the worker, and:
    assert "good: sweep over concurrency" in text  # the session's sweep summary above the table


def test_allure_results_carry_parameters_labels_steps_and_attachments(project):
    add(project, truth_recipe("good", load={"mode": "closed", "concurrency": [2]}), "good")
    results = project.path / "allure"
    res = project.runpytest_subprocess("--ubench-recipe=good", f"--alluredir={results}", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=1)
    (case,) = [json.loads(p.read_text()) for p in results.glob("*-result.json")]
    assert case["status"] == "passed"
    assert {"name": "concurrency", "value": "2"} in case["parameters"]
    assert {"name": "ubench_case", "value": "Case(good-concurrency=2)"} in case["parameters"]
    labels = {(lb["name"], lb["value"]) for lb in case["labels"]}
    assert {("recipe", "good"), ("protocol", "openai-chat"), ("orchestrator", "local")} <= labels
    assert ("service", "pytest_ubench.testing.truthserver") in labels
    steps = [st["name"] for st in case["steps"]]
    assert steps[0].startswith("load: closed {'concurrency': 2}") and steps[1] == "verdict: SLOs and baseline"
    attachments = {a["name"]: results / a["source"] for a in case["attachments"]}
    # stderr: allure-pytest's capture, holding the harness's log lines (the plugin leaves loguru's default
    # sink alone: a project's logging is its own)
    assert set(attachments) == {"results.json", "records.parquet", "latency CDFs", "service log (tail)", "stderr"}
    assert "good-concurrency=2: closed load against" in attachments["stderr"].read_text()
    assert json.loads(attachments["results.json"].read_text())["case_id"] == "good-concurrency=2"
    assert attachments["latency CDFs"].read_text().startswith("<svg")
    container = [json.loads(p.read_text()) for p in results.glob("*-container.json")]
    befores = [b["name"] for c in container for b in c.get("befores", []) for b in b.get("steps", [])]
    assert "deploy good (local)" in befores  # the deploy step, in the fixture's setup


def test_works_under_xdist(project):
    add(project, truth_recipe("good", load={"mode": "closed", "concurrency": [1, 2]}), "good")
    res = project.runpytest_subprocess("--ubench-recipe=good", "-n", "2")
    res.assert_outcomes(passed=2)
    (root,) = (project.path / "ubench-results").iterdir()  # one results root for the whole run
    assert sorted(p.parent.name for p in root.glob("*/results.json")) == ["good-concurrency=1", "good-concurrency=2"]
    res.stdout.fnmatch_lines(["*ubench summary*", "PASSED good-concurrency=*", "PASSED good-concurrency=*"])
    # One deployment shared by both workers (same endpoint), stopped by the controller at the end.
    endpoints = {json.loads(p.read_text())["endpoint"] for p in root.glob("*/results.json")}
    assert endpoints == {json.loads((root / "services" / "good" / "endpoint.json").read_text())["url"]}
    assert not pid_alive(json.loads((root / "services" / "good" / "endpoint.json").read_text())["pid"])
    assert not (root / "services" / "good" / "shared.json").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_signal_mid_run_leaves_no_server_behind(project, sig):
    add(project, truth_recipe("long", duration_s=60.0), "long")
    out = project.path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--ubench-recipe=long", f"--ubench-output={out}", "-p", "no:cacheprovider"],
        cwd=project.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pid = service_pid(out / "services" / "long" / "endpoint.json")
    time.sleep(6.5)  # well into the load stage
    assert pid_alive(pid)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    if sig == signal.SIGKILL:
        # No cleanup code runs; the kernel's parent-death signal still stops the service.
        deadline = time.monotonic() + 15
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(pid)
        return
    assert "KeyboardInterrupt" in output
    assert re.search(r"long-concurrency=2: load: \d+/60 s .*done \d+.*errors 0", output)  # a line per stage
    assert not pid_alive(pid)
    data = json.loads((out / "long-concurrency=2" / "results.json").read_text())
    assert data["aborted"] == "interrupted"


def test_baseline_gate_passes_a_rerun_and_fails_an_injected_slowdown(project):
    """Identical configuration rerun three times: never a regression. TTFT/ITL 30 % slower on the server:
    caught."""

    def recipe(ttft: str, itl: str) -> dict:
        data = truth_recipe("gate", duration_s=2.0)
        data["service"]["command"] = [*data["service"]["command"][:5], "--ttft-ms", ttft, "--itl-ms", itl]
        return data

    base = project.path / "baselines" / "main"
    add(project, recipe("10", "2"), "gate")
    saving = project.path / "saving"
    first = project.runpytest_subprocess(
        "--ubench-recipe=gate", f"--ubench-save-baseline={base}", f"--ubench-output={saving}", "-p", "no:cacheprovider"
    )
    first.assert_outcomes(passed=1)
    saved = json.loads((base / "gate-concurrency=2" / "baseline.json").read_text())
    assert len(saved["runs"]) == 5 and not (base / "gate-concurrency=2" / "records.parquet").exists()  # small
    # each run on a server of its own (what a rerun in a new session meets), each stopped after its run
    starts = re.findall(
        r"truthserver listening on 127\.0\.0\.1:(\d+)", (saving / "services" / "gate" / "service.log").read_text()
    )
    assert len(starts) == 5 and not any(port_open(int(p)) for p in starts)
    assert json.loads((saving / "gate-concurrency=2" / "results.json").read_text())["repeats"]["fresh_deployments"]
    for i in range(3):  # several A/A pairs: each unchanged rerun, a fresh process, passes
        out = project.path / f"again-{i}"
        again = project.runpytest_subprocess(
            "--ubench-recipe=gate", f"--ubench-baseline={base}", f"--ubench-output={out}", "-p", "no:cacheprovider"
        )
        again.assert_outcomes(passed=1)
        gate = json.loads((out / "gate-concurrency=2" / "results.json").read_text())["baseline"]
        assert gate["regressed"] is False
        assert {c["verdict"] for c in gate["comparisons"]} <= {"unchanged", "improvement"}
        assert {c["basis"] for c in gate["comparisons"]} == {"5 baseline runs"}

    # A session that starts slow (1.5x, once): flagged, re-measured on a fresh server, not confirmed.
    once = project.path / "slow-once"
    once.touch()
    blip = recipe("10", "2")
    blip["service"]["command"] += ["--slow-once", str(once)]
    add(project, blip, "gate")
    out = project.path / "blip"
    passed = project.runpytest_subprocess("--ubench-recipe=gate", f"--ubench-baseline={base}", f"--ubench-output={out}",
                                          "-p", "no:cacheprovider")  # fmt: skip
    passed.assert_outcomes(passed=1)
    gate = json.loads((out / "gate-concurrency=2" / "results.json").read_text())["baseline"]
    assert "regression" in {c["verdict"] for c in gate["comparisons"]} and gate["regressed"] is False
    assert [r["regressed"] for r in gate["confirmation"]["runs"]] == [False] and not once.exists()
    assert (out / "gate-concurrency=2" / "confirm" / "run1" / "gate-concurrency=2" / "results.json").exists()

    add(project, recipe("13", "2.6"), "gate")
    slow = project.runpytest_subprocess("--ubench-recipe=gate", f"--ubench-baseline={base}", "-p", "no:cacheprovider")
    slow.assert_outcomes(failed=1)
    slow.stdout.fnmatch_lines(["*regression against the baseline, confirmed by 1 more run(s) on a fresh deployment*",
                               "*ttft_ms*+*%*regression*"])  # fmt: skip
    # 10 -> 13 ms injected: +30 % on an idle machine; a busy one adds its own delay on top (seen: +41 %)
    change = re.search(r"^ttft_ms\s+\S+\s+\S+\s+\+([\d.]+)%", slow.stdout.str(), re.M)
    assert change is not None and float(change.group(1)) >= 20


def test_junit_properties_and_pytest_benchmark_json_under_xdist(project):
    import xml.etree.ElementTree as ET

    add(project, truth_recipe("good", load={"mode": "closed", "concurrency": [1, 2]}), "good")
    junit, bench = project.path / "junit.xml", project.path / "bench.json"
    res = project.runpytest_subprocess(
        "--ubench-recipe=good", "-n", "2", f"--junitxml={junit}", f"--ubench-benchmark-json={bench}"
    )
    res.assert_outcomes(passed=2)
    cases = ET.parse(junit).getroot().iter("testcase")
    props = [{p.get("name"): p.get("value") for p in case.iter("property")} for case in cases]
    assert len(props) == 2 and all(float(p["ubench.ttft_ms.p95"]) > 0 and p["ubench.passed"] == "True" for p in props)
    data = json.loads(bench.read_text())
    names = sorted(b["name"] for b in data["benchmarks"])
    assert names == sorted(f"test_llm[good-concurrency={c}]-{m}" for c in (1, 2) for m in ("ttft", "itl", "e2e"))
    ttft = next(b for b in data["benchmarks"] if b["name"] == "test_llm[good-concurrency=1]-ttft")
    assert 0.004 < ttft["stats"]["median"] < 1.0  # seconds; the server's TTFT is 5 ms
    # pytest-benchmark's own tool reads it
    shown = subprocess.run(
        [Path(sys.executable).parent / "pytest-benchmark", "compare", str(bench), "--columns=min,median,max"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "test_llm[good-concurrency=2]-e2e" in shown.stdout


def test_a_recipe_without_a_service_runs_fio_with_its_operations_in_both_reports(project):
    """fio starts no service: the plugin deploys nothing, and the reports show its jobs as operations."""
    jobs = [{"name": "rr", "rw": "randread", "bs": "4KiB", "size": "2MiB"}]
    workload = {"protocol": "fio", "stream": False, "duration_s": 0.5, "warmup_s": 0, "fio": {"jobs": jobs},
                "load": {"mode": "closed", "concurrency": 1}}  # fmt: skip
    fio = {"name": "disk", "workload": workload, "slo": ["ops.rr_read.per_s > 1"]}
    add(project, fio, "disk")
    report, results = project.path / "report.html", project.path / "allure"
    res = project.runpytest_subprocess("--ubench-recipe=disk", f"--html={report}", "--self-contained-html",
                                       f"--alluredir={results}")  # fmt: skip
    res.assert_outcomes(passed=1)
    res.stdout.fnmatch_lines(["*PASSED disk-concurrency=1: rr_read * IOPS * MB/s p99 * ms*"])
    text = html.unescape(html.unescape(report.read_text()))
    assert "<th>operation</th>" in text and "<th>rr_read</th>" in text
    (case,) = [json.loads(p.read_text()) for p in results.glob("*-result.json")]
    assert ("service", "fio") in {(lb["name"], lb["value"]) for lb in case["labels"]}
    assert "fio job file" in {a["name"] for a in case["attachments"]}


def test_junit_properties_carry_every_protocols_figures(project):
    """A key-value case has no tokens: its figures are per operation. Oracle: the raw records' own count
    of successful GETs and SETs in the measured window."""
    import xml.etree.ElementTree as ET

    redis = ["redis-server", "--bind", "{host}", "--port", "{port}", "--save", "", "--appendonly", "no"]
    add(project, {"name": "kv", "service": {"command": redis, "health": {"kind": "tcp"}},
                  "workload": {"protocol": "redis", "stream": False, "duration_s": 1.0, "warmup_s": 0.2,
                               "kv": {"keys": 100, "mix": {"get": 0.8, "set": 0.2}},
                               "load": {"mode": "closed", "concurrency": 2}}}, "kv")  # fmt: skip
    junit, bench, out = project.path / "junit.xml", project.path / "bench.json", project.path / "out"
    res = project.runpytest_subprocess("--ubench-recipe=kv", f"--junitxml={junit}", f"--ubench-benchmark-json={bench}",
                                       f"--ubench-output={out}", "-p", "no:cacheprovider")  # fmt: skip
    res.assert_outcomes(passed=1)
    (case,) = ET.parse(junit).getroot().iter("testcase")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    result = json.loads((out / "kv-concurrency=2" / "results.json").read_text())
    records = record_rows(out / "kv-concurrency=2")
    elapsed = result["throughput"]["elapsed_s"]
    for op in ("get", "set"):
        done = sum(1 for r in records if r["op"] == op and r["error"] is None and not r["warmup"])
        assert done > 10 and round(float(props[f"ubench.ops.{op}.per_s"]) * elapsed) == done
        assert 0 < float(props[f"ubench.ops.{op}.latency_ms.p99"]) < 1000
    assert "ubench.ttft_ms.p95" not in props and "ubench.output_tokens_per_s" not in props  # none, not zero
    (e2e,) = [b for b in json.loads(bench.read_text())["benchmarks"] if b["name"].endswith("-e2e")]
    assert e2e["extra_info"]["ops.get.per_s"] == float(props["ubench.ops.get.per_s"])


def test_ini_settings_with_the_command_line_over_them(project):
    """Every option has an ini key; the command line wins; ``ubench_recipes`` is the default set."""
    add(project, truth_recipe("alpha"), "alpha")
    add(project, truth_recipe("beta"), "beta")
    project.makeini("[pytest]\nubench_recipe_dirs = recipes\nubench_recipes =\n    alpha\nubench_output = from-ini\n"
                    "ubench_set =\n    workload.duration_s=0.4\n    workload.load.concurrency=[1, 3]\n")  # fmt: skip
    res = project.runpytest_subprocess("-p", "no:cacheprovider")
    res.assert_outcomes(passed=2)
    done = sorted(p.parent.name for p in (project.path / "from-ini").glob("*/results.json"))
    assert done == ["alpha-concurrency=1", "alpha-concurrency=3"]
    elapsed = json.loads((project.path / "from-ini" / done[0] / "results.json").read_text())["throughput"]["elapsed_s"]
    assert 0.3 < elapsed < 1.0  # the 0.4 s set in the ini, not the recipe's 2 s
    res = project.runpytest_subprocess("-p", "no:cacheprovider", "--ubench-recipe=beta", "--ubench-output=cli",
                                       "--ubench-set=workload.load.concurrency=2")  # fmt: skip
    res.assert_outcomes(passed=1)
    assert [p.parent.name for p in (project.path / "cli").glob("*/results.json")] == ["beta-concurrency=2"]


def test_no_recipe_anywhere_stops_with_a_hint(project):
    add(project, truth_recipe("alpha"), "alpha")
    res = project.runpytest_subprocess("-p", "no:cacheprovider")
    assert res.ret != 0
    res.stdout.fnmatch_lines(["*no recipe to run: give --ubench-recipe=NAME, set ubench_recipes in pytest.ini*alpha*"])
    assert not (project.path / "ubench-results").exists() or not any((project.path / "ubench-results").rglob("*.json"))


def test_a_marked_test_runs_its_recipes_without_any_option(project):
    """No --ubench-* option and no ini: the marker names the recipes, and asking for the fixture is
    what wakes the plugin (dormant until then)."""
    add(project, truth_recipe("alpha", duration_s=0.5), "alpha")
    add(project, truth_recipe("beta", duration_s=0.5), "beta")
    project.makepyfile(test_bench="""
import pytest

@pytest.mark.ubench("beta")
def test_marked(ubench_case, ubench):
    ubench.run(ubench_case)
""")  # fmt: skip
    res = project.runpytest_subprocess("-p", "no:cacheprovider", "-v")
    res.assert_outcomes(passed=1)
    res.stdout.fnmatch_lines(["*test_marked[[]beta-concurrency=2[]] PASSED*"])
    assert list((project.path / "ubench-results").glob("*/beta-concurrency=2/results.json"))
