"""Protocols beyond chat, each against a real server: embeddings (llama.cpp), plain HTTP."""

from __future__ import annotations

import json
import time

import jsonschema
import pytest
from helpers import LLAMA, SCHEMA, TRUTH, record_rows, run_killing_the_service, run_recipe, start

from pytest_ubench import Services, expand, run_case
from pytest_ubench import load_recipe as load
from pytest_ubench.load.planning import PlanError
from pytest_ubench.orchestrators.base import ServiceError
from pytest_ubench.orchestrators.local import LocalOrchestrator

pytestmark = pytest.mark.integration


def test_embeddings_batches_against_llamacpp(write_recipe, tmp_path):
    recipe = {
        "name": "emb",
        "service": {"command": [*LLAMA, "--embedding"]},
        "workload": {
            "protocol": "openai-embeddings",
            "model": "tiny",
            "stream": False,
            "batch_size": 4,
            "dataset": {"prompt_tokens": {"dist": "uniform", "min": 8, "max": 32}, "prompts": 64},
            "load": {"mode": "closed", "concurrency": 2},
            "duration_s": 2.0,
            "warmup_s": 0.3,
        },
        "slo": ["throughput.items_per_s > 1", "error_rate < 0.01"],
    }
    res = run_recipe(write_recipe, tmp_path, recipe)
    r = res.result
    assert r["requests"]["failed"] == 0 and r["requests"]["ok"] > 5
    assert r["throughput"]["items_per_s"] == pytest.approx(4 * r["throughput"]["requests_per_s"])
    assert r["dataset"]["batch_size"] == 4 and r["dataset"]["token_counts"] == "exact (server /tokenize)"
    records = record_rows(res.run_dir)
    assert all(x["items"] == 4 and x["bytes"] > 1000 for x in records if x["error"] is None)
    assert all(8 * 4 <= x["prompt_tokens"] <= 33 * 4 for x in records if x["error"] is None)
    assert r["metrics"]["ttft_ms"]["count"] == 0  # no first token in an embeddings call
    assert res.passed


def test_plain_http_records_status_bytes_and_first_byte(write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("UB_TEST_TOKEN", "s3cr3t-token-value")
    call = {"method": "GET", "path": "/truth", "headers": {"Authorization": "Bearer ${UB_TEST_TOKEN}"}}
    recipe = {
        "name": "plain",
        "service": {"command": TRUTH},
        "workload": {"protocol": "http", "stream": False, "http": call, "load": {"mode": "open", "rate": 50},
                     "duration_s": 1.0, "warmup_s": 0.2},
        "slo": ["error_rate < 0.01", "ttft_ms.p99 < 1000"],
    }  # fmt: skip
    res = run_recipe(write_recipe, tmp_path, recipe)
    r = res.result
    assert r["requests"]["ok"] > 20 and r["requests"]["failed"] == 0
    assert r["metrics"]["ttft_ms"]["count"] == r["requests"]["ok"]  # time to first byte, per request
    assert r["throughput"]["response_bytes_per_s"] > 0
    out = tmp_path / "out"
    for path in out.rglob("*"):
        if path.is_file():
            assert b"s3cr3t-token-value" not in path.read_bytes(), path
    assert "${UB_TEST_TOKEN}" in json.dumps(r["recipe"]["resolved"])


def test_plain_http_unexpected_status_is_an_error_by_status(write_recipe, tmp_path):
    recipe = {
        "name": "missing",
        "service": {"command": TRUTH},
        "workload": {"protocol": "http", "stream": False, "http": {"path": "/no-such-thing"},
                     "load": {"mode": "closed", "concurrency": 1}, "duration_s": 0.5, "warmup_s": 0},
        "slo": ["error_rate < 0.01"],
    }  # fmt: skip
    res = run_recipe(write_recipe, tmp_path, recipe)
    assert res.result["requests"]["errors"] == {"http_404": res.result["requests"]["total"]}
    assert not res.passed


def test_missing_header_secret_names_the_field(write_recipe, tmp_path, monkeypatch):
    monkeypatch.delenv("UB_ABSENT", raising=False)
    recipe = {
        "name": "nosecret",
        "service": {"command": TRUTH},
        "workload": {"protocol": "http", "stream": False, "http": {"headers": {"X-Key": "${UB_ABSENT}"}},
                     "load": {"mode": "closed", "concurrency": 1}, "duration_s": 0.5},
    }  # fmt: skip
    with pytest.raises(PlanError, match=r"workload\.http\.headers\.X-Key: environment variable UB_ABSENT is not set"):
        run_recipe(write_recipe, tmp_path, recipe)


REDIS = ["redis-server", "--bind", "{host}", "--port", "{port}", "--save", "", "--appendonly", "no"]


def _redis(name: str, kv: dict, *server_args: str, **workload: object) -> dict:
    wl: dict = {"protocol": "redis", "stream": False, "kv": kv, "load": {"mode": "closed", "concurrency": 4},
                "duration_s": 1.0, "warmup_s": 0.2}  # fmt: skip
    wl.update(workload)
    return {"name": name, "service": {"command": [*REDIS, *server_args], "health": {"kind": "tcp"}}, "workload": wl}


def _command_calls(url: str) -> dict[str, int]:
    """The server's own count of each command it ran (INFO commandstats, through redis-py)."""
    import redis

    host, port = url.split("//")[-1].rsplit(":", 1)
    with redis.Redis(host=host, port=int(port)) as client:
        stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def test_redis_get_set_mix_reports_each_operation(write_recipe, tmp_path):
    """Oracle: the server's own count of GET and SET calls (INFO commandstats) against the client's records,
    warm-up included, plus the preload's one SET a key."""
    dep = start(REDIS, tmp_path / "svc", "redis", health={"kind": "tcp"})
    try:
        recipe = _redis("kv", {"keys": 500, "value_bytes": 64, "mix": {"get": 0.8, "set": 0.2}})
        recipe["service"] = {"url": dep.endpoint.url, "health": {"kind": "tcp"}}
        recipe["slo"] = ["ops.get.latency_ms.p99 < 500", "ops.set.per_s > 1", "error_rate < 0.01"]
        res = run_recipe(write_recipe, tmp_path, recipe)
        calls = _command_calls(dep.endpoint.url)
    finally:
        LocalOrchestrator().stop(dep)
    rows = record_rows(res.run_dir)
    assert calls["get"] == sum(x["op"] == "get" for x in rows) > 100, calls
    assert calls["set"] == sum(x["op"] == "set" for x in rows) + 500, calls
    r = res.result
    ops = r["ops"]
    assert set(ops) == {"get", "set"} and r["requests"]["failed"] == 0
    share = ops["get"]["total"] / r["requests"]["total"]
    assert 0.75 < share < 0.85
    records = record_rows(res.run_dir)
    assert all(x["bytes"] == 64 for x in records if x["op"] == "get")  # preloaded: every GET hits
    assert [v["expression"] for v in r["slo"] if v["passed"]][:3] == recipe["slo"]
    assert res.passed


def test_redis_pipelines_count_every_operation(write_recipe, tmp_path):
    res = run_recipe(write_recipe, tmp_path, _redis("pipe", {"keys": 100, "pipeline": 8, "mix": {"get": 1}}))
    r = res.result
    assert set(r["ops"]) == {"pipeline"}
    assert r["throughput"]["items_per_s"] == pytest.approx(8 * r["throughput"]["requests_per_s"])


def test_redis_password_from_the_environment_never_reaches_the_results(write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("UB_REDIS_PW", "kv-secret-8f3a")
    recipe = _redis("auth", {"keys": 50, "password_env": "UB_REDIS_PW"}, "--requirepass", "${UB_REDIS_PW}")
    res = run_recipe(write_recipe, tmp_path, recipe)
    assert res.result["requests"]["failed"] == 0 and res.result["requests"]["ok"] > 10
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert b"kv-secret-8f3a" not in path.read_bytes(), path


def test_redis_wrong_password_is_a_clear_error(write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("UB_REDIS_PW", "right")
    monkeypatch.setenv("UB_REDIS_CLIENT_PW", "wrong")
    recipe = _redis("badauth", {"keys": 10, "password_env": "UB_REDIS_CLIENT_PW"}, "--requirepass", "${UB_REDIS_PW}")
    with pytest.raises(ServiceError, match=r"redis at 127\.0\.0\.1:\d+: authentication failed"):
        run_recipe(write_recipe, tmp_path, recipe)


POSTGRES = ["{python}", "-m", "pytest_ubench.servers.postgres", "--data", "{run_dir}/pgdata", "--host", "{host}",
            "--port", "{port}"]  # fmt: skip


def _pg(name: str, sql: dict, env: dict | None = None, **workload: object) -> dict:
    wl: dict = {"protocol": "postgres", "stream": False, "sql": sql, "load": {"mode": "closed", "concurrency": 4},
                "duration_s": 1.5, "warmup_s": 0.3}  # fmt: skip
    wl.update(workload)
    service = {"command": POSTGRES, "health": {"kind": "tcp", "timeout_s": 60}, "env": env or {}}
    return {"name": name, "service": service, "workload": wl}


def test_postgres_tpcb_default_commits_every_transaction(write_recipe, tmp_path):
    import psycopg
    from loguru import logger

    recipe = _pg("tpcb", {"scale": 1})
    recipe["slo"] = ["ops.tpcb.per_s > 10", "error_rate < 0.01"]
    (case,) = expand(load(write_recipe(recipe)))
    warnings: list[str] = []
    sink = logger.add(warnings.append, level="WARNING", format="{message}")
    logger.enable("pytest_ubench")  # the library is quiet until its CLI or plugin says otherwise
    try:
        with Services(tmp_path / "out", monitoring=False) as services:
            res = run_case(case, services)
            ep = services.get(case).endpoint
            with psycopg.connect(host=ep.host, port=ep.port, dbname="postgres", user="postgres") as conn:
                (history,) = conn.execute("SELECT count(*) FROM pgbench_history").fetchone()
    finally:
        logger.remove(sink)
        logger.disable("pytest_ubench")
    # scale 1 under 4 connections: the user is told the figures are the one branch row's lock queue
    assert any("sql.scale 1 is below 4 connections" in w for w in warnings), warnings
    jsonschema.validate(res.result, SCHEMA)
    r = res.result
    assert set(r["ops"]) == {"tpcb"} and r["requests"]["failed"] == 0 and r["requests"]["ok"] > 20
    records = record_rows(res.run_dir)
    # every transaction the client counted as done (warm-up included) left its row in the history
    assert history == sum(1 for x in records if x["error"] is None)
    assert r["dataset"]["statements"] == ["tpcb"] and res.passed


def test_postgres_statement_mix_and_its_errors(write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("UB_PG_PW", "pg-secret-51c2")
    sql = {
        "password_env": "UB_PG_PW",
        "setup": ["CREATE TABLE IF NOT EXISTS kv (k int PRIMARY KEY, v text)",
                  "INSERT INTO kv SELECT g, md5(g::text) FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING"],
        "statements": [
            {"name": "read", "sql": "SELECT v FROM kv WHERE k = %(k)s", "weight": 3,
             "params": {"k": {"random": [1, 1000]}}},
            {"name": "write", "sql": "UPDATE kv SET v = %(v)s WHERE k = %(k)s", "weight": 1,
             "params": {"k": {"random": [1, 1000]}, "v": "x"}},
        ],
    }  # fmt: skip
    res = run_recipe(write_recipe, tmp_path, _pg("mix", sql, env={"UBENCH_PG_PASSWORD": "${UB_PG_PW}"}))
    ops = res.result["ops"]
    assert set(ops) == {"read", "write"} and res.result["requests"]["failed"] == 0
    assert 0.65 < ops["read"]["total"] / res.result["requests"]["total"] < 0.85
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file() and "pgdata" not in path.parts:
            assert b"pg-secret-51c2" not in path.read_bytes(), path


def test_postgres_missing_table_stops_before_the_load(write_recipe, tmp_path):
    sql = {"statements": [{"name": "bad", "sql": "SELECT * FROM no_such_table"}]}
    with pytest.raises(ServiceError, match=r"statement 'bad': relation \"no_such_table\" does not exist"):
        run_recipe(write_recipe, tmp_path, _pg("missing", sql))


def test_postgres_wrong_password_is_the_servers_message(write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("UB_PG_PW", "right")
    monkeypatch.setenv("UB_PG_CLIENT_PW", "wrong")
    recipe = _pg("auth", {"password_env": "UB_PG_CLIENT_PW"}, env={"UBENCH_PG_PASSWORD": "${UB_PG_PW}"})
    with pytest.raises(ServiceError, match="password authentication failed"):
        run_recipe(write_recipe, tmp_path, recipe)


# moto's S3 server: an emulator (named as one), the S3 implementation that installs from PyPI.
MOTO = ["{python}", "-m", "moto.server", "-H", "{host}", "-p", "{port}"]


def _s3(name: str, s3: dict, **workload: object) -> dict:
    wl: dict = {"protocol": "s3", "stream": False, "s3": s3, "load": {"mode": "closed", "concurrency": 2},
                "duration_s": 1.5, "warmup_s": 0.2}  # fmt: skip
    wl.update(workload)
    return {"name": name, "service": {"command": MOTO, "health": {"kind": "tcp", "timeout_s": 60}}, "workload": wl}


def test_s3_put_get_list_against_the_moto_emulator(write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("UB_S3_KEY", "AKIAUBENCHTEST")
    monkeypatch.setenv("UB_S3_SECRET", "s3-secret-9d1e")
    s3 = {"mix": {"put": 0.4, "get": 0.5, "list": 0.1}, "object_sizes": ["4KiB", "64KiB"], "keys": 8,
          "access_key_env": "UB_S3_KEY", "secret_key_env": "UB_S3_SECRET"}  # fmt: skip
    recipe = _s3("objects", s3)
    recipe["slo"] = ["ops.get.bytes_per_s > 1000", "error_rate < 0.01"]
    res = run_recipe(write_recipe, tmp_path, recipe)
    r = res.result
    assert set(r["ops"]) == {"put", "get", "list"} and r["requests"]["failed"] == 0
    records = record_rows(res.run_dir)
    assert {x["bytes"] for x in records if x["op"] == "put"} <= {4096, 65536}
    # GETs read objects of either size (preloaded at the largest, then overwritten by PUTs)
    assert {x["bytes"] for x in records if x["op"] == "get"} <= {4096, 65536}
    assert all(x["items"] == 8 for x in records if x["op"] == "list")
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert b"s3-secret-9d1e" not in path.read_bytes(), path
    assert res.passed


def test_s3_multipart_uploads(write_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("UB_S3_KEY", "AKIAUBENCHTEST")
    monkeypatch.setenv("UB_S3_SECRET", "test")
    s3 = {"mix": {"put": 1}, "object_sizes": ["6MiB"], "keys": 2, "multipart_bytes": "5MiB", "part_bytes": "5MiB",
          "access_key_env": "UB_S3_KEY", "secret_key_env": "UB_S3_SECRET"}  # fmt: skip
    res = run_recipe(write_recipe, tmp_path, _s3("multi", s3, duration_s=1.0))
    ops = res.result["ops"]
    assert ops["put"]["ok"] >= 1 and res.result["requests"]["failed"] == 0
    assert ops["put"]["bytes_per_s"] == pytest.approx(ops["put"]["per_s"] * 6 * 2**20)


def test_s3_missing_bucket_or_credentials_are_named_before_the_load(write_recipe, tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ServiceError, match=r"s3 at http://127\.0\.0\.1:\d+/ubench: no credentials"):
        run_recipe(write_recipe, tmp_path, _s3("nocreds", {}))
    monkeypatch.setenv("UB_S3_KEY", "AKIAUBENCHTEST")
    monkeypatch.setenv("UB_S3_SECRET", "test")
    s3 = {"bucket": "absent", "create_bucket": False, "access_key_env": "UB_S3_KEY", "secret_key_env": "UB_S3_SECRET"}
    with pytest.raises(ServiceError, match=r"s3 at http://127\.0\.0\.1:\d+/absent: .*404"):
        run_recipe(write_recipe, tmp_path, _s3("nobucket", s3))


def test_adapters_run_in_worker_processes_and_report_their_errors(write_recipe, tmp_path, monkeypatch):
    ok = _redis("kv2", {"keys": 100}, load={"mode": "closed", "concurrency": 4, "workers": 2})
    res = run_recipe(write_recipe, tmp_path, ok)
    assert res.result["client"]["processes"] == 2 and res.result["requests"]["failed"] == 0
    monkeypatch.setenv("UB_REDIS_PW", "right")
    monkeypatch.setenv("UB_REDIS_CLIENT_PW", "wrong")
    bad = _redis("kv2bad", {"keys": 10, "password_env": "UB_REDIS_CLIENT_PW"}, "--requirepass", "${UB_REDIS_PW}",
                 load={"mode": "closed", "concurrency": 2, "workers": 2})  # fmt: skip
    with pytest.raises(ServiceError, match=r"load client process \d: redis at .*: authentication failed"):
        run_recipe(write_recipe, tmp_path / "bad", bad)


S3_KEYS = {"access_key_env": "UB_S3_KEY", "secret_key_env": "UB_S3_SECRET"}


@pytest.mark.parametrize("protocol", ["redis", "postgres", "s3"])
def test_server_killed_mid_run_is_recorded_not_raised(write_recipe, tmp_path, monkeypatch, protocol):
    """The server dies during the load: its failures are recorded by kind, the run ends, results are written."""
    monkeypatch.setenv("UB_S3_KEY", "test")
    monkeypatch.setenv("UB_S3_SECRET", "test")
    recipes = {
        "redis": lambda: _redis("gone", {"keys": 100}),
        "postgres": lambda: _pg("gone", {"scale": 1}),
        "s3": lambda: _s3("gone", S3_KEYS | {"keys": 4, "object_sizes": ["4KiB"]}),
    }
    recipe = recipes[protocol]()
    dep = start(recipe["service"]["command"], tmp_path / "svc", protocol, health={"kind": "tcp", "timeout_s": 60})
    recipe["workload"] |= {"duration_s": 4.0, "warmup_s": 0.0}
    recipe["slo"] = ["error_rate < 0.01"]
    started = time.monotonic()
    res = run_killing_the_service(write_recipe, tmp_path, recipe, dep, after_s=1.5)
    took = time.monotonic() - started
    r = res.result
    assert r["requests"]["ok"] > 0 and r["requests"]["failed"] > 0, r["requests"]
    assert "connect" in r["requests"]["errors"], r["requests"]["errors"]
    assert not res.passed and (res.run_dir / "records.parquet").stat().st_size > 0
    assert took < 60, f"the run took {took:.0f} s after its server died"
