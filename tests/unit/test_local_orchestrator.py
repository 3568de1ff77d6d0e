from __future__ import annotations

import os
import socket
import sys
import time

import pytest
from helpers import pid_alive

from pytest_ubench.orchestrators.base import Endpoint, ServiceError, ServiceState
from pytest_ubench.orchestrators.health import wait_healthy
from pytest_ubench.orchestrators.local import LocalOrchestrator
from pytest_ubench.orchestrators.placeholders import expand
from pytest_ubench.orchestrators.ports import PORT_FLOOR, ephemeral_floor, free_port
from pytest_ubench.recipes.deployment import HealthCheck, ServiceSpec


def test_placeholders_and_environment(monkeypatch):
    monkeypatch.setenv("UB_SECRET", "s3cret")
    assert expand("--port={port}", {"port": "8"}) == "--port=8"
    assert expand("${UB_SECRET}", {}) == "s3cret"
    with pytest.raises(ServiceError, match="unknown placeholder"):
        expand("{nope}", {"port": "1"})


def test_recipe_values_never_reach_a_shell(tmp_path):
    marker = tmp_path / "pwned"
    spec = ServiceSpec(command=[sys.executable, "-c", "import sys; print(sys.argv[1:])", f"; touch {marker}", "$(id)"])
    orch = LocalOrchestrator()
    dep = orch.deploy(spec, "inert", tmp_path)
    dep.handle.wait(10)
    assert not marker.exists()
    assert f"'; touch {marker}', '$(id)'" in orch.logs(dep)


def test_group_is_stopped_and_endpoint_written(tmp_path):
    # the service spawns a child that would outlive a plain kill of the leader
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "time.sleep(600)"
    )
    orch = LocalOrchestrator()
    dep = orch.deploy(ServiceSpec(command=[sys.executable, "-c", code]), "group", tmp_path)
    time.sleep(0.5)
    children = [int(p) for p in os.popen(f"pgrep -P {dep.endpoint.pid}").read().split()]
    assert children and orch.status(dep) == ServiceState.RUNNING
    assert Endpoint.read(tmp_path / "endpoint.json") == dep.endpoint
    orch.stop(dep)
    time.sleep(0.2)
    assert not pid_alive(dep.endpoint.pid)
    assert not any(pid_alive(c) for c in children)


def test_service_that_exits_fails_readiness_with_its_log(tmp_path):
    orch = LocalOrchestrator()
    spec = ServiceSpec(command=[sys.executable, "-c", "print('model file is corrupt'); raise SystemExit(7)"])
    dep = orch.deploy(spec, "broken", tmp_path)
    with pytest.raises(ServiceError, match=r"(?s)exited with code 7 before becoming healthy.*model file is corrupt"):
        wait_healthy(orch, dep, spec.health)


def test_service_that_never_answers_times_out(tmp_path):
    orch = LocalOrchestrator()
    spec = ServiceSpec(command=[sys.executable, "-c", "import time; time.sleep(60)"], health=HealthCheck(timeout_s=1))
    dep = orch.deploy(spec, "silent", tmp_path)
    try:
        with pytest.raises(ServiceError, match=r"not healthy at http://127.0.0.1:\d+/health after 1 s"):
            wait_healthy(orch, dep, spec.health)
    finally:
        orch.stop(dep)
    assert not pid_alive(dep.endpoint.pid)


def test_missing_binary_is_a_clear_error(tmp_path):
    with pytest.raises(ServiceError, match="cannot start 'no-such-binary-ub'"):
        LocalOrchestrator().deploy(ServiceSpec(command=["no-such-binary-ub"]), "x", tmp_path)


def test_free_ports_come_from_below_the_ephemeral_range_and_bind() -> None:
    """A port inside the ephemeral range can be taken by an outgoing connection before the service binds."""
    ports = {free_port("127.0.0.1") for _ in range(20)}
    assert all(PORT_FLOOR <= p < ephemeral_floor() for p in ports) and len(ports) > 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.pop()))
