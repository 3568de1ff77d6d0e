"""Replicas: several instances of one service, deployed, watched, scaled and stopped as one deployment.

``Replicated`` wraps any orchestrator (local processes, Slurm jobs) and is what every caller holds: each
replica is a deployment of the backend's own (a process, a job), replica 0 in the service's directory and
replica k in ``replica-k`` under it. A deployment of one replica is the backend's plain one; of several, a
``Group`` whose endpoint lists every replica's URL (``Endpoint.replicas``), which the load clients spread
their requests over. The group runs while any replica does: a replica lost mid-run leaves the others
serving, and says so (``members``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loguru import logger

from ..recipes.deployment import ReplicaSlot, Resources, ServiceSpec
from . import front, keys
from .base import Deployment, Orchestrator, ServiceError, ServiceState, address, from_record, to_record
from .health import deploy_healthy, wait_healthy


@dataclass
class Group:
    """The replicas of one deployment and what starting another one needs."""

    members: list[Deployment]
    spec: ServiceSpec  # as the recipe gave it, with its count
    detach: bool
    key_file: str | None  # the key every replica checks (one per deployment), removed with the group
    front: Deployment | None = None  # the load balancer in front of them (service.front)


@dataclass(frozen=True)
class Member:
    """One replica's state, for a verdict or ``server status``."""

    index: int
    url: str
    state: ServiceState
    exit_code: int | None
    detail: str


def member_dir(run_dir: Path, index: int) -> Path:
    return run_dir if index == 0 else run_dir / f"replica-{index}"


def member_name(name: str, index: int) -> str:
    """Replica 0 carries the service's name (it is the service when there is one); the others, their index
    (a Slurm job name takes no brackets)."""
    return name if index == 0 else f"{name}-replica-{index}"


def slot(spec: ServiceSpec, index: int, remote: bool, key_file: str | None = None) -> ServiceSpec:
    """Replica ``index``'s own spec: its port after a fixed one, its cores (pinned here; asked for under
    Slurm), the shared key. A single unpinned instance is the recipe's spec as it is."""
    cores = spec.cpus_per_replica
    if index == 0 and cores is None and key_file is None and not isinstance(spec.replicas, list) and spec.replicas == 1:
        return spec
    update: dict[str, Any] = {"replicas": 1}
    if isinstance(spec.port, int):
        update["port"] = spec.port + index
    cpus: list[int] = []
    if cores is not None and remote:
        update["resources"] = spec.resources.model_copy(update={"cpus_per_task": cores})
    elif cores is not None:
        usable = sorted(os.sched_getaffinity(0))
        cpus = usable[index * cores : (index + 1) * cores]
        if len(cpus) < cores:
            raise ServiceError(
                f"replica {index} needs {cores} core(s) of its own (service.cpus_per_replica); this process may "
                f"use {len(usable)} ({', '.join(map(str, usable))})"
            )
    return spec.model_copy(update=update | {"replica": ReplicaSlot(index=index, cpus=cpus, key_file=key_file)})


class Replicated:
    """An orchestrator that deploys ``service.replicas`` instances through another one."""

    def __init__(self, inner: Orchestrator) -> None:
        self.inner = inner
        self.name = inner.name
        self.remote = inner.remote

    # What only the backend knows: passed through.
    def placeholders(self) -> dict[str, str]:
        return self.inner.placeholders()

    def monitor_image(self, name: str) -> str | None:
        return self.inner.monitor_image(name)

    def pull(self, image: str) -> Path:
        return self.inner.pull(image)

    def run_tasks(
        self,
        what: str,
        job_name: str,
        resources: Resources,
        command: list[str],
        out_dir: Path,
        on_running: Callable[[float], None] | None = None,
    ) -> None:
        self.inner.run_tasks(what, job_name, resources, command, out_dir, on_running)

    def dry_run(self, spec: ServiceSpec, name: str, run_dir: Path) -> str:
        count = _count(spec)
        text = self.inner.dry_run(slot(spec, 0, self.remote), name, run_dir)
        return text if count == 1 else f"{text}\n# ... replica 0 of {count}; the others alike, each on its own port"

    def deploy(self, spec: ServiceSpec, name: str, run_dir: Path, detach: bool = False) -> Deployment:
        """``spec.replicas`` instances (a count, the case's); several are each healthy before it returns."""
        count = _count(spec)
        if count == 1 and spec.front is None:
            return self.inner.deploy(slot(spec, 0, self.remote), name, run_dir, detach)
        if spec.front is not None and self.remote:
            raise ServiceError(f"{name}: service.front starts nginx on this machine; on a cluster the load "
                               "clients spread the requests (leave out 'front', choose service.routing)")  # fmt: skip
        key = keys.for_service(spec, name, detach)
        group = Group([], spec, detach, str(key) if key else None)
        try:
            self._add(group, name, run_dir, count)
            self._front(group, name, run_dir)
        except BaseException:
            self._stop_members(group.members)
            keys.remove(group.key_file)
            raise
        return self._as_deployment(name, run_dir, group)

    def _front(self, group: Group, name: str, run_dir: Path) -> None:
        """(Re)start the group's load balancer over its replicas as they are now."""
        if group.spec.front is None:
            return
        if group.front is not None:
            self.inner.stop(group.front)
            group.front = None
        upstreams = [address(m.endpoint.url) for m in group.members]
        spec = front.spec(run_dir / "front", group.spec, upstreams)
        group.front = deploy_healthy(self.inner, spec, f"{name}-front", run_dir / "front", group.detach)
        logger.info("{}: nginx in front of {} replica(s) at {}", name, len(upstreams), group.front.endpoint.url)

    def scale(self, dep: Deployment, count: int, spec: ServiceSpec | None = None, detach: bool = False) -> Deployment:
        """The deployment with ``count`` replicas: new ones started (each healthy) or the last ones stopped.
        ``spec`` and ``detach``: as the deployment was started, for one that was a plain instance (a group
        keeps its own)."""
        if count < 1:
            raise ServiceError(f"{dep.name}: {count} replicas is not a deployment (stop it instead)")
        group = dep.handle if isinstance(dep.handle, Group) else None
        if group is None:
            if count == 1:
                return dep
            if spec is None:
                raise ServiceError(f"{dep.name}: the recipe's service is needed to start more replicas")
            key = dep.endpoint.key_file if spec.replica is None else spec.replica.key_file
            group = Group([dep], spec, detach, key)
        if count > len(group.members):
            self._add(group, dep.name, dep.run_dir, count)
        elif count < len(group.members):
            gone, group.members = group.members[count:], group.members[:count]
            logger.info("{}: scaling down to {} replica(s)", dep.name, count)
            self._stop_members(gone)
        self._front(group, dep.name, dep.run_dir)
        if count == 1 and group.front is None:
            only = group.members[0]
            only.endpoint = replace(only.endpoint, key_file=group.key_file)
            only.endpoint.write(dep.run_dir / "endpoint.json")
            return only
        return self._as_deployment(dep.name, dep.run_dir, group)

    def _add(self, group: Group, name: str, run_dir: Path, count: int) -> None:
        """Start replicas up to ``count``: one after the other (a local start forks, and a fork beside other
        threads can deadlock), then all waited for at once (a model server's start takes its time)."""
        new: list[Deployment] = []
        try:
            for index in range(len(group.members), count):
                member_spec = slot(group.spec, index, self.remote, group.key_file)
                new.append(self.inner.deploy(member_spec, member_name(name, index), member_dir(run_dir, index),
                                             group.detach))  # fmt: skip
            pool = ThreadPoolExecutor(len(new), thread_name_prefix="ubench-replica")
            try:
                waits = [pool.submit(wait_healthy, self.inner, m, group.spec.health) for m in new]
                futures.wait(waits, return_when=futures.FIRST_EXCEPTION)  # the first failure is the answer
                for wait in waits:
                    if wait.done() and (problem := wait.exception()) is not None:
                        raise problem
                for wait in waits:
                    wait.result()
            finally:
                pool.shutdown(wait=False, cancel_futures=True)  # a wait still polling ends with its replica
        except BaseException:
            self._stop_members(new)
            raise
        group.members.extend(new)
        logger.info("{}: {} replicas: {}", name, count, ", ".join(m.endpoint.url for m in group.members))

    def _stop_members(self, members: list[Deployment]) -> None:
        """Stop replicas of a group that lives on: the shared key stays."""
        for member in members:
            member.endpoint = replace(member.endpoint, key_file=None)
            try:
                self.inner.stop(member)
            except Exception as exc:  # keep stopping the others
                logger.error("failed to stop {}: {}", member.name, exc)

    def _as_deployment(self, name: str, run_dir: Path, group: Group) -> Deployment:
        first = group.members[0]
        urls = tuple(m.endpoint.url for m in group.members)
        endpoint = replace(first.endpoint, key_file=group.key_file, replicas=urls)
        if group.front is not None:  # the clients send to it; Prometheus still scrapes each replica
            at = group.front.endpoint
            endpoint = replace(endpoint, host=at.host, port=at.port, url=at.url, balanced=True)
        endpoint.write(run_dir / "endpoint.json")
        return Deployment(name, endpoint, run_dir, first.log_path, first.command, handle=group)

    def members(self, dep: Deployment) -> list[Member]:
        """Each replica's state (one for a plain deployment)."""
        group = dep.handle if isinstance(dep.handle, Group) else None
        out = []
        for index, member in enumerate(group.members if group else [dep]):
            state = self.inner.status(member) if member.handle is not None else ServiceState.RUNNING
            out.append(Member(index, member.endpoint.url, state, member.exit_code, member.detail))
        return out

    def status(self, dep: Deployment) -> ServiceState:
        """Running while any replica runs; otherwise the first replica's end."""
        if not isinstance(dep.handle, Group):
            return self.inner.status(dep)
        states = self.members(dep)
        balancer = dep.handle.front
        if balancer is not None and (state := self.inner.status(balancer)) != ServiceState.RUNNING:
            dep.exit_code, dep.detail = balancer.exit_code, f"its nginx front: {balancer.detail}".rstrip(": ")
            return state
        if any(m.state == ServiceState.RUNNING for m in states):
            return ServiceState.RUNNING
        ended = next((m for m in states if m.state in (ServiceState.FAILED, ServiceState.STOPPED)), None)
        if ended is None:
            return states[0].state
        dep.exit_code, dep.detail = ended.exit_code, f"replica {ended.index}: {ended.detail}".rstrip(": ")
        return ServiceState.FAILED if any(m.state == ServiceState.FAILED for m in states) else ServiceState.STOPPED

    def logs(self, dep: Deployment, lines: int = 40, replica: int | None = None) -> str:
        """The service's log; of a group, replica ``replica``'s, or the last lines of each under a heading."""
        if not isinstance(dep.handle, Group):
            if replica not in (None, 0):
                raise ServiceError(f"{dep.name} runs one replica: there is no replica {replica}")
            return self.inner.logs(dep, lines)
        members = dep.handle.members
        if replica is not None:
            if not 0 <= replica < len(members):
                raise ServiceError(f"{dep.name} has replicas 0..{len(members) - 1}: there is no replica {replica}")
            return self.inner.logs(members[replica], lines)
        each = max(5, lines // len(members))
        return "".join(f"--- replica {i} ({m.log_path}) ---\n{self.inner.logs(m, each)}" for i, m in enumerate(members))

    def stop(self, dep: Deployment) -> None:
        if not isinstance(dep.handle, Group):
            self.inner.stop(dep)
            return
        group = dep.handle
        if group.front is not None:
            self.inner.stop(group.front)
        self._stop_members(group.members)
        keys.remove(group.key_file)
        dep.exit_code = group.members[0].exit_code

    def describe(self, dep: Deployment) -> dict[str, Any]:
        if not isinstance(dep.handle, Group):
            return self.inner.describe(dep)
        group = dep.handle
        return {
            "replicas": [to_record(self.inner, m) for m in group.members],
            "spec": group.spec.model_dump(mode="json", exclude_defaults=True),
            "detach": group.detach,
            "key_file": group.key_file,
            "front": to_record(self.inner, group.front) if group.front is not None else None,
        }

    def attach(self, dep: Deployment, data: dict[str, Any]) -> Deployment:
        if "replicas" not in data:
            return self.inner.attach(dep, data)
        members = [from_record(self.inner, member_name(dep.name, i), r) for i, r in enumerate(data["replicas"])]
        balancer = from_record(self.inner, f"{dep.name}-front", data["front"]) if data.get("front") else None
        spec = ServiceSpec.model_validate(data["spec"])
        dep.handle = Group(members, spec, data["detach"], data["key_file"], balancer)
        return dep


def _count(spec: ServiceSpec) -> int:
    if isinstance(spec.replicas, list):
        raise ServiceError(f"replicas {spec.replicas}: a sweep is deployed one count at a time (its cases')")
    return spec.replicas


def replicated(orch: Orchestrator) -> Replicated:
    """``orch`` able to deploy replicas (itself when it already is)."""
    return orch if isinstance(orch, Replicated) else Replicated(orch)
