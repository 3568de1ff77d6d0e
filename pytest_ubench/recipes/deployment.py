"""How a recipe's service is deployed (its command or the URL of a running one, container, resources,
health check) and a site's batch conventions (``ClusterProfile``): what the orchestrators read."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_serializer, field_validator, model_validator

from .fields import Name, PositiveFloat, PositiveInt, SbatchOption, SlurmWord, Strict, without_credentials


class HealthCheck(Strict):
    """``http``: GET ``path`` answers 200; ``tcp``: the port accepts a connection (databases, caches)."""

    kind: Literal["http", "tcp"] = "http"
    path: str = "/health"
    timeout_s: PositiveFloat = 60.0
    interval_s: PositiveFloat = 0.2


class Resources(Strict):
    """What a batch job asks the scheduler for; ignored by the local orchestrator except ``gpus``."""

    nodes: PositiveInt = 1
    tasks_per_node: PositiveInt = 1
    cpus_per_task: PositiveInt | None = None
    memory: Annotated[str, Field(pattern=r"^[0-9]+[KMGT]?$")] | None = None
    gpus: Annotated[int, Field(ge=0)] = 0
    time: Annotated[str, Field(pattern=r"^([0-9]+-)?[0-9]+(:[0-9]{2}){0,2}$")] | None = None
    partition: SlurmWord | None = None
    qos: SlurmWord | None = None
    reservation: SlurmWord | None = None
    sbatch: list[SbatchOption] = Field(default_factory=list)
    # A job the harness started (not 'server start') cancels itself when the harness has not touched
    # its heartbeat file for this long (the harness was killed): nodes are not held until --time. 0: never.
    heartbeat_s: Annotated[float, Field(ge=0)] = 60.0


class Container(Strict):
    """An Apptainer image: a ``.sif`` path, or a ``docker://``/``oras://`` reference pulled once."""

    image: Annotated[str, Field(pattern=r"^\S+$")]
    mode: Literal["exec", "run"] = "exec"
    binds: list[Annotated[str, Field(pattern=r"^[^\s,]+$")]] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)  # extra apptainer options, e.g. ["--writable-tmpfs"]


class MultiNode(Strict):
    """Helpers for a service spanning nodes (Ray, MPI daemons): started before ``command``, which runs on
    the head node. ``{head}`` is the head node's name and ``{nodes}`` the node count in all three;
    ``{node}`` in ``head`` and ``worker`` the name of the node the helper runs on.

    ``ready: ray`` holds ``command`` back until the Ray cluster the helpers form has every node of the job
    alive, asked through Ray's own API on the head node (with the service's container, whose ``python3``
    must import ``ray``, as the vLLM image's does); nodes are told apart by Ray's node name, so the helpers
    start Ray with ``--node-name={node}``. Past ``ready_timeout_s`` the job ends naming the nodes that never
    joined. Without ``ready`` the job only waits ``settle_s``."""

    head: list[str] | None = None  # on the head node (the batch script's own node)
    worker: list[str]  # on each other node, one ``srun`` task each, after the head helper
    settle_s: Annotated[float, Field(ge=0)] = 0.0  # wait after starting the helpers, before ``command``
    ready: Literal["ray"] | None = None
    ready_timeout_s: Annotated[float, Field(gt=0)] = 600.0


class Sidecar(Strict):
    """A program run in the service's own job, on each of its nodes, beside it: the monitoring exporters on a
    cluster (node exporter, DCGM exporter), which so see the job's node and GPUs without an allocation of
    their own, which a GPU node would not grant while the service holds it. Set by the harness from the
    recipe's monitoring. ``{host}``: where the service binds; ``{port}``: a free port the job picks."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    command: list[str]
    image: Annotated[str, Field(pattern=r"^\S+$")] | None = None  # run through Apptainer (with --nv for GPUs)


class ReplicaSlot(Strict):
    """Which replica of several one deployment is, set by the harness (``orchestrators/replicas.py``), never
    by a recipe: its index (``{replica}`` in the command), the cores it is pinned to on this machine, and
    the key file every replica shares (the clients send one key to all of them)."""

    index: Annotated[int, Field(ge=0)]
    cpus: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    key_file: str | None = None


Routing = Literal["least-outstanding", "round-robin", "random"]


class Front(Strict):
    """A load balancer the harness starts in front of the replicas (nginx from the distribution, on this
    machine): the clients send everything to it and it spreads the requests by ``service.routing``."""

    kind: Literal["nginx"] = "nginx"
    workers: PositiveInt = 1  # nginx worker processes
    timeout_s: PositiveFloat = 3600.0  # the longest a replica may take to answer (a long generation)


class ServiceSpec(Strict):
    """How to start the service under test (or where it already runs, with ``url``)."""

    command: list[str] | None = None
    url: str | None = None
    runtime: Literal["process", "apptainer"] = "process"
    container: Container | None = None
    resources: Resources = Field(default_factory=Resources)
    multinode: MultiNode | None = None
    host: str = "127.0.0.1"
    port: int | Literal["auto"] = "auto"
    tls: bool = False  # the service speaks HTTPS (certificates checked against the system CA store)
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(default_factory=dict)
    # The variable the server reads an API key from (vLLM: VLLM_API_KEY): each deployment gets a fresh
    # key there, and the load clients send it (Authorization: Bearer). For services beyond loopback.
    api_key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    # For a server with no key of its own (Ollama, Triton): on a cluster, a front in its job checks each
    # deployment's key and passes requests on; the server then listens on its node's loopback
    # (orchestrators/key_front.py). The health and metrics paths stay open.
    key_front: bool = False
    health: HealthCheck = Field(default_factory=HealthCheck)
    sidecars: list[Sidecar] = Field(default_factory=list)  # written into a Slurm job (Sidecar), not by recipes
    metrics_path: str | None = None
    workdir: str | None = None
    # Instances of the service, each on its own port (a fixed ``port`` p gives p, p+1, ...) or Slurm job; a
    # list is a sweep axis like concurrency (a case per count, the deployment scaled between them). The
    # clients spread requests over them by ``routing``.
    replicas: PositiveInt | list[PositiveInt] = 1
    routing: Routing = "least-outstanding"
    # Cores per replica: locally each replica is pinned to cores of its own (replica k to the k-th group
    # of the cores this process may use); under Slurm, each replica's job asks for them (--cpus-per-task).
    cpus_per_replica: PositiveInt | None = None
    front: Front | None = None  # a load balancer in front of the replicas, instead of the clients' routing
    replica: ReplicaSlot | None = None  # set by the harness for one replica of several

    @model_validator(mode="after")
    def _one_of_command_or_url(self) -> ServiceSpec:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of 'command' (start a service) or 'url' (use a running one)")
        if self.command is not None and not self.command:
            raise ValueError("'command' must not be empty")
        if (self.runtime == "apptainer") != (self.container is not None):
            raise ValueError("'runtime: apptainer' and a 'container' part (with its image) go together")
        if self.resources.nodes > 1 and self.multinode is None:
            raise ValueError(
                f"a service on {self.resources.nodes} nodes needs a 'multinode' part: the 'worker' command "
                "started on the other nodes (and optionally a 'head' helper)"
            )
        if self.multinode is not None and self.resources.nodes < 2:
            raise ValueError("'multinode' needs 'resources.nodes' of 2 or more")
        if self.key_front and self.api_key_env is not None:
            raise ValueError("'key_front' is for a server without a key: with 'api_key_env' it checks its own")
        if self.key_front and self.health.kind == "tcp":
            raise ValueError("'key_front' needs an HTTP health check: the front accepts connections at once")
        counts = self.replicas if isinstance(self.replicas, list) else [self.replicas]
        if not counts or len(set(counts)) != len(counts):
            raise ValueError(f"'replicas' lists each count once, got {self.replicas}")
        if self.url is not None and (counts != [1] or self.front is not None):
            raise ValueError("'replicas' and 'front' start instances of a 'command'; a running service's 'url' is "
                             "one")  # fmt: skip
        if self.front is not None and self.tls:
            raise ValueError("'front' passes plain HTTP to the replicas; a service with 'tls' is balanced by the "
                             "clients (service.routing)")  # fmt: skip
        return self

    @property
    def replica_counts(self) -> list[int]:
        """The replica counts to run: one, or the sweep's."""
        return self.replicas if isinstance(self.replicas, list) else [self.replicas]

    @field_serializer("url")
    def _url_shown(self, url: str | None) -> str | None:
        """Credentials in a URL are never written out (results, logs)."""
        return None if url is None else without_credentials(url)

    @field_validator("port")
    @classmethod
    def _port_range(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 0 < v < 65536:
            raise ValueError(f"must be between 1 and 65535, got {v}")
        return v


class MonitorImages(Strict):
    """Images to run monitoring from on a cluster whose nodes have no such binary (MeluXina): Prometheus
    then runs as an Apptainer job like any service, the exporters in the service's job (Sidecar); without
    one, the binary on PATH."""

    prometheus: Annotated[str, Field(pattern=r"^\S+$")] | None = None  # its executable: prometheus
    node_exporter: Annotated[str, Field(pattern=r"^\S+$")] | None = None  # its executable: node_exporter
    dcgm_exporter: Annotated[str, Field(pattern=r"^\S+$")] | None = None  # its executable: dcgm-exporter


class ClusterProfile(Strict):
    """A site's batch conventions (``recipes/clusters/``): kept out of recipes so one recipe runs anywhere."""

    kind: Literal["cluster"] = "cluster"  # optional in a file under clusters/; required elsewhere
    name: Name
    description: str = ""
    orchestrator: Literal["local", "slurm"] = "slurm"
    shebang: Annotated[str, Field(pattern=r"^#!/\S+( -[a-z]+)?$")] = "#!/bin/bash"
    account: SlurmWord | None = None  # or UBENCHAI_SLURM_ACCOUNT
    account_required: bool = False
    partition: SlurmWord | None = None
    gpu_partition: SlurmWord | None = None  # used instead of ``partition`` when a service asks for GPUs
    qos: SlurmWord | None = None
    time: Annotated[str, Field(pattern=r"^([0-9]+-)?[0-9]+(:[0-9]{2}){0,2}$")] | None = None  # else 1 h
    reservation: SlurmWord | None = None
    queue_timeout_s: PositiveFloat = 3600.0  # a job still queued this long is cancelled (--ubench-queue-timeout)
    gpu_flag: Literal["gres", "gpus"] = "gres"
    modules: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+/-]+$")]] = Field(default_factory=list)
    # Site paths may name {project} (and, but for scratch itself, {scratch}); recipes name them as
    # {scratch} and {project} in a service's command, env, binds and workdir.
    project: SlurmWord | None = None  # the project id in site paths; default: the account
    binds: list[Annotated[str, Field(pattern=r"^[^\s,]+$")]] = Field(default_factory=list)
    scratch: str | None = None  # a filesystem every node shares, for big files that outlive a run
    image_cache: str | None = None  # pulled .sif files; default: {scratch}/ubenchai/images, else ~/.cache
    # A site's own copy of an image a recipe names: a registry mirror or a .sif already on the filesystem
    # ("docker://vllm/vllm-openai:v0.6.3": /apps/containers/vllm-0.6.3.sif). Recipes stay as they are.
    images: dict[Annotated[str, Field(pattern=r"^\S+$")], Annotated[str, Field(pattern=r"^\S+$")]] = Field(
        default_factory=dict
    )
    sbatch: list[SbatchOption] = Field(default_factory=list)
    # A job the harness started (not 'server start') cancels itself when the harness has not touched
    # its heartbeat file for this long (the harness was killed): nodes are not held until --time. 0: never.
    heartbeat_s: Annotated[float, Field(ge=0)] = 60.0
    monitor_images: MonitorImages = Field(default_factory=MonitorImages)
