"""Typed recipe models; validation errors name the field path, the loader adds file and line.

A list where a scalar is expected in ``workload.load`` marks a sweep; the models accept both so one
schema validates the recipe as written, and ``sweep.expand`` turns it into one point per case.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from ..metrics import slo as slo_expr
from ..monitor import queries

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


def _check_slo(expr: str) -> str:
    slo_expr.parse(expr)
    return expr


SLOExpression = Annotated[str, AfterValidator(_check_slo)]


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in a recipe must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthCheck(_Strict):
    """``http``: GET ``path`` answers 200; ``tcp``: the port accepts a connection (databases, caches)."""

    kind: Literal["http", "tcp"] = "http"
    path: str = "/health"
    timeout_s: PositiveFloat = 60.0
    interval_s: PositiveFloat = 0.2


# Values that end up on ``#SBATCH`` lines, which sbatch parses itself (no shell quoting there): only
# characters that cannot end a line or open a quote are accepted.
SlurmWord = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.,:@%+=/-]+$")]
SbatchOption = Annotated[str, Field(pattern=r"^--[a-z][a-z-]*(=[A-Za-z0-9_.,:@%+=/-]+)?$")]


class Resources(_Strict):
    """What a batch job asks the scheduler for; ignored by the local orchestrator except ``gpus``."""

    nodes: PositiveInt = 1
    tasks_per_node: PositiveInt = 1
    cpus_per_task: PositiveInt | None = None
    memory: Annotated[str, Field(pattern=r"^[0-9]+[KMGT]?$")] | None = None
    gpus: Annotated[int, Field(ge=0)] = 0
    time: Annotated[str, Field(pattern=r"^([0-9]+-)?[0-9]+(:[0-9]{2}){0,2}$")] | None = None
    partition: SlurmWord | None = None
    qos: SlurmWord | None = None
    sbatch: list[SbatchOption] = Field(default_factory=list)


class Container(_Strict):
    """An Apptainer image: a ``.sif`` path, or a ``docker://``/``oras://`` reference pulled once."""

    image: Annotated[str, Field(pattern=r"^\S+$")]
    mode: Literal["exec", "run"] = "exec"
    binds: list[Annotated[str, Field(pattern=r"^[^\s,]+$")]] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)  # extra apptainer options, e.g. ["--writable-tmpfs"]


class MultiNode(_Strict):
    """Helpers for a service spanning nodes (Ray, MPI daemons): started before ``command``, which runs on
    the head node. ``{head}`` is the head node's name and ``{nodes}`` the node count in all three."""

    head: list[str] | None = None  # on the head node (the batch script's own node)
    worker: list[str]  # on each other node, one ``srun`` task each, after the head helper
    settle_s: Annotated[float, Field(ge=0)] = 0.0  # wait after starting the helpers, before ``command``


class ServiceSpec(_Strict):
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
    env: dict[str, str] = Field(default_factory=dict)
    health: HealthCheck = Field(default_factory=HealthCheck)
    metrics_path: str | None = None
    workdir: str | None = None

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
        return self

    @field_validator("port")
    @classmethod
    def _port_range(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 0 < v < 65536:
            raise ValueError(f"must be between 1 and 65535, got {v}")
        return v


class LengthDistribution(_Strict):
    """Token lengths drawn per prompt (seeded), clipped to ``[min, max]``.

    ``normal`` and ``lognormal`` take the mean and standard deviation of the lengths themselves.
    """

    dist: Literal["fixed", "uniform", "normal", "lognormal"]
    mean: PositiveFloat | None = None
    std: Annotated[float, Field(ge=0)] = 0.0
    min: PositiveInt = 1
    max: PositiveInt | None = None

    @model_validator(mode="after")
    def _complete(self) -> LengthDistribution:
        if self.dist == "uniform" and self.max is None:
            raise ValueError("'uniform' needs 'min' and 'max'")
        if self.dist != "uniform" and self.mean is None:
            raise ValueError(f"'{self.dist}' needs 'mean'")
        if self.max is not None and self.max < self.min:
            raise ValueError(f"'max' ({self.max}) is below 'min' ({self.min})")
        return self


TokenLength = PositiveInt | LengthDistribution


class Dataset(_Strict):
    """Synthetic prompts, or prompts from a local file (never fetched at run time).

    ``jsonl``: one ``{"prompt": ...}`` or ``{"messages": [...]}`` per line, optional ``max_tokens``;
    ``sharegpt``: ShareGPT conversations (JSON array or JSONL), first human turn as the prompt and the
    reply's length as ``max_tokens``.
    """

    kind: Literal["synthetic", "jsonl", "sharegpt"] = "synthetic"
    path: str | None = None  # relative to the recipe file
    prompt_tokens: TokenLength = 128
    output_tokens: TokenLength = 64  # files: when a line gives no max_tokens
    seed: int = 1
    prompts: PositiveInt = 1024  # synthetic: how many; files: at most this many
    # A random prefix per prompt, so a warm prefix cache cannot serve repeated prompts from memory.
    unique_prefix: bool = False
    # Synthetic prompts are cut to exact token counts with the server's /tokenize where it answers
    # ("auto"), or must ("server"); "approximate" never asks. Results say which was used.
    token_counts: Literal["auto", "server", "approximate"] = "auto"

    @model_validator(mode="after")
    def _path_for_files(self) -> Dataset:
        if (self.kind == "synthetic") != (self.path is None):
            raise ValueError("'path' goes with kind 'jsonl' or 'sharegpt' (and only with them)")
        return self


class Ramp(_Strict):
    """``rate: {from: 1, to: 64, steps: 7, step_s: 30}``: stepped load within one case.

    Steps are spaced geometrically by default (1, 2, 4, ... 64), linearly with ``spacing: linear``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    start: PositiveFloat = Field(alias="from")
    to: PositiveFloat
    steps: Annotated[int, Field(ge=2)]
    step_s: PositiveFloat
    spacing: Literal["geometric", "linear"] = "geometric"

    def rates(self) -> list[float]:
        n = self.steps - 1
        if self.spacing == "linear":
            return [self.start + (self.to - self.start) * i / n for i in range(self.steps)]
        return [self.start * (self.to / self.start) ** (i / n) for i in range(self.steps)]


class Bursts(_Strict):
    """``size`` extra requests at once every ``every_s`` seconds, on top of the arrivals."""

    every_s: PositiveFloat
    size: PositiveInt


class Trace(_Strict):
    """Replay of a JSONL trace: ``{"timestamp": s, ...}`` plus a prompt, messages or a whole ``body``."""

    path: str  # relative to the recipe file
    speed: PositiveFloat = 1.0  # 2 replays twice as fast


class Load(_Strict):
    """Closed loop (``concurrency`` users), open loop (``rate`` arrivals per second, a ramp or a
    trace), or ``search``: the highest rate (or concurrency) that still meets the SLOs."""

    mode: Literal["closed", "open", "search"] = "closed"
    concurrency: PositiveInt | list[PositiveInt] | None = None
    rate: PositiveFloat | list[PositiveFloat] | Ramp | None = None
    arrival: Literal["poisson", "constant", "gamma"] = "poisson"
    burstiness: PositiveFloat = 1.0  # gamma shape: 1 is Poisson, below 1 burstier
    bursts: Bursts | None = None
    trace: Trace | None = None
    max_in_flight: PositiveInt | None = None  # open loop: arrivals beyond it are dropped and counted
    seed: int = 0
    # Client processes, each with its own event loop; "auto" is one per core.
    workers: PositiveInt | Literal["auto"] = 1
    # search
    over: Literal["rate", "concurrency"] = "rate"
    low: PositiveFloat | None = None
    high: PositiveFloat | None = None
    precision: Annotated[float, Field(gt=0, lt=1)] = 0.1  # relative width of the final bracket
    slo: list[SLOExpression] = Field(default_factory=list)  # default: the recipe's SLOs
    probe_s: PositiveFloat | None = None  # each probe's duration (default: workload.duration_s)

    @model_validator(mode="after")
    def _fields_match_mode(self) -> Load:
        if self.mode == "closed":
            if self.concurrency is None:
                raise ValueError("closed loop needs 'concurrency'")
            if self.rate is not None or self.trace is not None:
                raise ValueError("'rate' and 'trace' are for open loop; closed loop uses 'concurrency'")
            if self.max_in_flight is not None or self.bursts is not None:
                raise ValueError("'max_in_flight' and 'bursts' are for open loop")
        elif self.mode == "open":
            if (self.rate is None) == (self.trace is None):
                raise ValueError("open loop needs 'rate' (requests per second) or a 'trace' to replay, not both")
            if self.concurrency is not None:
                raise ValueError("'concurrency' is for closed loop; open loop uses 'rate'")
        else:
            if self.low is None or self.high is None or self.low >= self.high:
                raise ValueError("search needs 'low' < 'high' (the bracket to search)")
            if self.rate is not None or self.concurrency is not None or self.trace is not None:
                raise ValueError("search sets the load itself: give 'low' and 'high', not 'rate' or 'concurrency'")
        if self.mode != "search" and (self.low is not None or self.high is not None or self.slo):
            raise ValueError("'low', 'high' and 'slo' are for mode: search")
        for name in ("concurrency", "rate"):
            value = getattr(self, name)
            if isinstance(value, list) and not value:
                raise ValueError(f"'{name}' sweep list must not be empty")
        return self


class Timeouts(_Strict):
    connect_s: PositiveFloat = 5.0
    request_s: PositiveFloat = 120.0


class HttpCall(_Strict):
    """``protocol: http``: one request for anything without its own adapter.

    Header values may read the environment (``Authorization: "Bearer ${TOKEN}"``); the value is read
    when the run starts and never written to results.
    """

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    path: Annotated[str, Field(pattern=r"^/\S*$")] = "/"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | dict[str, object] | list[object] | None = None  # a dict or list is sent as JSON
    expect_status: Annotated[int, Field(ge=100, le=599)] = 200


def _get_set() -> dict[Literal["get", "set"], float]:
    return {"get": 0.9, "set": 0.1}


def _one_mib() -> list[str | int]:
    return ["1MiB"]


def _put_get() -> dict[Literal["put", "get", "list"], float]:
    return {"put": 0.5, "get": 0.5}


class KeyValue(_Strict):
    """``protocol: redis``: GET/SET over ``keys`` keys of ``value_bytes`` each; ``pipeline`` operations per
    round trip. The mix gives each operation's share."""

    keys: PositiveInt = 10_000
    value_bytes: PositiveInt = 128
    mix: dict[Literal["get", "set"], Annotated[float, Field(ge=0)]] = Field(default_factory=_get_set)
    pipeline: PositiveInt = 1
    preload: bool = True  # set every key before the run, so GETs hit
    db: Annotated[int, Field(ge=0)] = 0
    password_env: str | None = None  # the environment variable holding the password
    seed: int = 0

    @model_validator(mode="after")
    def _mix_adds_up(self) -> KeyValue:
        if sum(self.mix.values()) <= 0:
            raise ValueError("'mix' needs a positive share for get or set")
        return self


class RandomInt(_Strict):
    """A parameter drawn uniformly from ``[low, high]`` per request (seeded): ``{random: [1, 100000]}``."""

    random: tuple[int, int]


class SqlStatement(_Strict):
    """One statement class of the mix: a statement, or a list run as one transaction. Parameters are
    psycopg's named placeholders, ``%(aid)s``."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")]
    sql: str | list[str]
    weight: PositiveFloat = 1.0
    params: dict[str, int | float | str | RandomInt] = Field(default_factory=dict)


class Sql(_Strict):
    """``protocol: postgres``: a weighted statement mix over a connection pool (its size is the
    concurrency); no statements means pgbench's TPC-B-like transaction at ``scale``."""

    database: str = "postgres"
    user: str = "postgres"
    password_env: str | None = None  # the environment variable holding the password
    setup: list[str] = Field(default_factory=list)  # run once before the clock starts; make them idempotent
    statements: list[SqlStatement] = Field(default_factory=list)
    scale: PositiveInt = 1  # the default mix: 100,000 accounts per unit, as pgbench
    seed: int = 0


ByteSize = Annotated[str | int, Field(description="bytes, or with a unit: 64KiB, 1MiB, 8MB")]


class S3(_Strict):
    """``protocol: s3``: PUT/GET/LIST over ``keys`` objects in ``bucket`` (boto3); sizes are drawn per
    request from ``object_sizes``; uploads of ``multipart_bytes`` or more go multipart."""

    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")] = "ubench"
    create_bucket: bool = True
    mix: dict[Literal["put", "get", "list"], Annotated[float, Field(ge=0)]] = Field(default_factory=_put_get)
    object_sizes: list[ByteSize] = Field(default_factory=_one_mib, min_length=1)
    keys: PositiveInt = 64
    multipart_bytes: ByteSize = "8MiB"
    part_bytes: ByteSize = "8MiB"
    region: str = "us-east-1"
    access_key_env: str | None = None
    secret_key_env: str | None = None
    seed: int = 0

    @field_validator("object_sizes", "multipart_bytes", "part_bytes")
    @classmethod
    def _sizes_parse(cls, v: object) -> object:
        for item in v if isinstance(v, list) else [v]:
            parse_bytes(item)
        return v


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}


def parse_bytes(value: object) -> int:
    """``64KiB``, ``1MB``, ``4096``: a size in bytes; anything else is a recipe error naming the value."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = re.fullmatch(r"\s*([0-9]+)\s*([A-Za-z]*)\s*", str(value))
    if m is None or m.group(2).upper() not in _UNITS or int(m.group(1)) <= 0:
        raise ValueError(f"not a size: {value!r} (a number of bytes, or with B, KB, MB, GB, KiB, MiB, GiB)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


Param = int | float | str | bool


class Vector(_Strict):
    """``protocol: vector``: create ``collection``, insert ``count`` vectors (timed phases), then query
    it under load with ``top_k`` and, for ``filtered_share`` of queries, a filter on one of ``groups``
    groups; every answer's recall@k is scored against numpy's exact answer on the same data."""

    engine: Literal["chroma", "milvus", "qdrant"]
    collection: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{1,62}[A-Za-z0-9]$")] = "ubench"
    dim: PositiveInt = 64  # synthetic data; files give their own
    count: PositiveInt = 10_000  # vectors stored (files: at most)
    queries: PositiveInt = 1_000  # distinct query vectors, cycled
    clusters: PositiveInt = 16  # synthetic data: seeded Gaussian clusters
    metric: Literal["l2", "cosine", "ip"] = "l2"
    top_k: PositiveInt = 10
    index: Literal["hnsw", "flat", "auto"] = "hnsw"
    index_params: dict[str, Param] = Field(default_factory=dict)  # the engine's own names
    # A list is a sweep axis (ef: [16, 64, 256]): one case per value, recall beside throughput.
    search_params: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Param | list[Param]] = Field(
        default_factory=dict
    )
    filtered_share: Annotated[float, Field(ge=0, le=1)] = 0.0
    groups: PositiveInt = 10
    insert_batch: PositiveInt = 1_000
    # rebuild: drop and build the collection; reuse: keep one of the right size, else build it;
    # existing: the collection holds this data already (ids 0..count-1 in data order): never written
    setup: Literal["rebuild", "reuse", "existing"] = "rebuild"
    data: str | None = None  # .npy (rows x dim), relative to the recipe file
    query_data: str | None = None  # .npy; default: synthetic queries, or perturbed stored vectors
    api_key_env: str | None = None  # the environment variable holding an API key or token
    # Wait this long after the index reports ready, for stores that keep indexing in the background
    # without saying so (Milvus Lite: measured, queries in the first second after are brute force).
    settle_s: Annotated[float, Field(ge=0)] = 0.0
    seed: int = 0


class Grpc(_Strict):
    """``protocol: grpc``: unary or server-streaming calls of ``service``/``method``, described by
    ``proto`` (compiled when the run starts) or by the server's reflection service when it is null."""

    service: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")]  # full name: package.Service
    method: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    request: dict[str, object] = Field(default_factory=dict)  # the request message, protobuf's JSON mapping
    proto: str | None = None  # relative to the recipe file
    include: list[str] = Field(default_factory=list)  # import paths for the .proto, relative to the recipe
    metadata: dict[Annotated[str, Field(pattern=r"^[a-z0-9_.-]+$")], str] = Field(default_factory=dict)
    channels: PositiveInt = 1  # HTTP/2 connections the calls are spread over


KServeType = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                     "FP16", "FP32", "FP64", "BYTES"]  # fmt: skip


class KServeInput(_Strict):
    name: str
    datatype: KServeType
    shape: list[PositiveInt] = Field(min_length=1)
    data: list[object] | None = None  # flattened, row-major; null: seeded random values of the shape


class KServe(_Strict):
    """``protocol: kserve-v2``: the Open Inference Protocol's ``/v2/models/<model>/infer`` (Triton,
    MLServer, KServe)."""

    model: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    inputs: list[KServeInput] = Field(min_length=1)
    outputs: list[str] = Field(default_factory=list)  # request these outputs only
    variants: PositiveInt = 16  # distinct bodies when some input is random
    seed: int = 0

    @model_validator(mode="after")
    def _data_fits_shape(self) -> KServe:
        for i in self.inputs:
            if i.data is not None and len(i.data) != math.prod(i.shape):
                raise ValueError(f"input {i.name}: {len(i.data)} values do not fill shape {i.shape}")
        return self


FioOption = Annotated[str | int | float, Field(description="a fio option value on one line")]


class FioJob(_Strict):
    """One fio job, run alone (``stonewall``) for the workload's duration after its warm-up (ramp)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]
    rw: Literal["read", "write", "randread", "randwrite", "rw", "randrw"]
    bs: ByteSize = "4KiB"
    size: ByteSize = "256MiB"  # per process: the file each of numjobs processes works on
    numjobs: PositiveInt | None = None  # default: workload.load.concurrency, so a concurrency list sweeps it
    iodepth: PositiveInt = 1
    rwmixread: Annotated[int, Field(ge=0, le=100)] | None = None  # rw/randrw: the read share, percent
    direct: bool = False  # O_DIRECT: bypass the page cache (what a parallel file system's figures need)
    options: dict[Annotated[str, Field(pattern=r"^[a-z_]+$")], FioOption] = Field(default_factory=dict)

    @field_validator("bs", "size")
    @classmethod
    def _sizes_parse(cls, v: object) -> object:
        parse_bytes(v)
        return v


class Fio(_Strict):
    """``protocol: fio``: file storage measured by fio (jobs from the recipe, JSON output parsed into
    per-job bandwidth, IOPS and latency percentiles); no service is started."""

    directory: Annotated[str, Field(pattern=r"^[^\n\r:]+$")] = "{run_dir}/fio"  # placeholders and ${VAR}
    ioengine: Literal["psync", "sync", "libaio", "io_uring", "posixaio", "mmap"] = "psync"
    jobs: list[FioJob] = Field(min_length=1)
    options: dict[Annotated[str, Field(pattern=r"^[a-z_]+$")], FioOption] = Field(default_factory=dict)  # [global]
    keep_files: bool = False  # remove fio's data files after the run

    @field_validator("jobs")
    @classmethod
    def _unique_names(cls, v: list[FioJob]) -> list[FioJob]:
        names = [j.name for j in v]
        if len(set(names)) != len(names):
            raise ValueError(f"job names must be unique: {names}")
        return v

    @field_validator("options", mode="after")
    @classmethod
    def _one_line(cls, v: dict[str, object]) -> dict[str, object]:
        for key, value in v.items():
            if any(c in str(value) for c in "\n\r"):
                raise ValueError(f"option {key}: a value must be one line")
        return v


# Each protocol's own part of the workload, and whether it must be written (the others have defaults).
PROTOCOL_PARTS = {"http": ("http", True), "redis": ("kv", False), "postgres": ("sql", False), "s3": ("s3", False),
                  "vector": ("vector", True), "fio": ("fio", True), "grpc": ("grpc", True),
                  "kserve-v2": ("kserve", True)}  # fmt: skip


class Workload(_Strict):
    protocol: Literal[
        "openai-chat",
        "openai-completions",
        "openai-embeddings",
        "ollama-chat",
        "ollama-generate",
        "http",
        "redis",
        "postgres",
        "s3",
        "vector",
        "fio",
        "grpc",
        "kserve-v2",
    ] = "openai-chat"
    model: str = "default"
    stream: bool = True
    dataset: Dataset = Field(default_factory=Dataset)
    load: Load
    duration_s: PositiveFloat = 20.0
    warmup_s: Annotated[float, Field(ge=0)] = 0.0
    max_requests: PositiveInt | None = None
    timeouts: Timeouts = Field(default_factory=Timeouts)
    params: dict[str, object] = Field(default_factory=dict)
    api_key_env: str | None = None
    # Where the load client runs: in this process, or as a Slurm job of clients.nodes x
    # clients.tasks_per_node processes that split the load and whose records are merged exactly.
    orchestration: Literal["local", "slurm"] = "local"
    clients: Resources = Field(default_factory=Resources)
    # Each point runs this many times; results give mean, 95 % confidence interval and CV per figure.
    repeat: PositiveInt = 1
    batch_size: PositiveInt = 1  # openai-embeddings: inputs per request
    http: HttpCall | None = None  # protocol: http
    kv: KeyValue | None = None  # protocol: redis
    sql: Sql | None = None  # protocol: postgres
    s3: S3 | None = None  # protocol: s3
    vector: Vector | None = None  # protocol: vector
    fio: Fio | None = None  # protocol: fio
    grpc: Grpc | None = None  # protocol: grpc
    kserve: KServe | None = None  # protocol: kserve-v2

    @model_validator(mode="after")
    def _protocol_parts(self) -> Workload:
        for protocol, (part, required) in PROTOCOL_PARTS.items():
            given = getattr(self, part) is not None
            if given and self.protocol != protocol:
                raise ValueError(f"a '{part}' part goes with 'protocol: {protocol}'")
            if required and self.protocol == protocol and not given:
                raise ValueError(f"'protocol: {protocol}' needs a '{part}' part (docs/recipes.md)")
        unstreamed = ("openai-embeddings", "http", "redis", "postgres", "s3", "vector", "fio", "kserve-v2")
        if self.protocol in unstreamed and self.stream:
            raise ValueError(f"'{self.protocol}' does not stream: set 'stream: false'")
        if self.batch_size > 1 and self.protocol != "openai-embeddings":
            raise ValueError("'batch_size' is for protocol openai-embeddings")
        return self


class Monitor(_Strict):
    """Server-side metrics: Prometheus deployed with the service, queries evaluated per case window."""

    enabled: bool = True
    interval_s: PositiveFloat = 1.0
    retention: str = "1d"
    query_sets: list[Literal["llamacpp", "vllm", "node", "dcgm"]] = Field(default_factory=list)
    queries: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], str] = Field(default_factory=dict)
    targets: list[Annotated[str, Field(pattern=r"^[^\s/:]+:\d+$")]] = Field(default_factory=list)
    target_timeout_s: PositiveFloat = 30.0

    def query_names(self) -> set[str]:
        return set(queries.resolve(self.query_sets, self.queries, self.interval_s))


class GrafanaServer(_Strict):
    """Grafana run by ``ubenchai monitor start`` from its image (Apptainer), provisioned for the monitor."""

    image: Annotated[str, Field(pattern=r"^\S+$")] = "docker://grafana/grafana-oss:11.3.0"
    command: list[str] = Field(default_factory=lambda: ["grafana", "server", "--homepath=/usr/share/grafana"])
    host: str = "127.0.0.1"  # reach it through an ssh tunnel (printed), or say 0.0.0.0


class MonitorRecipe(Monitor):
    """A standalone monitor (``recipes/monitors/``) for ``ubenchai monitor start``."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    grafana: GrafanaServer | None = None


class Regression(_Strict):
    """When a case counts as a regression against its baseline (see ``metrics/compare.py``)."""

    min_change: Annotated[float, Field(gt=0)] = 0.10  # relative change of the metric's centre
    metrics: dict[
        Literal["ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "requests_per_s", "output_tokens_per_s", "recall"],
        Annotated[float, Field(gt=0)],
    ] = Field(default_factory=dict)  # per-metric min_change (recall's default: 0.01)
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.01  # significance level of the one-sided test


class Recipe(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    service: ServiceSpec | None = None  # none only for protocol fio (the file system is the service)
    workload: Workload
    monitor: Monitor | None = None
    slo: list[SLOExpression] = Field(default_factory=list)
    regression: Regression = Field(default_factory=Regression)
    strict_samples: bool = False  # an SLO on an under-sampled percentile fails instead of passing with a note
    strict_client: bool = False  # a run whose client was likely the bottleneck fails instead of warning

    @model_validator(mode="after")
    def _service_unless_fio(self) -> Recipe:
        if self.service is None and self.workload.protocol != "fio":
            raise ValueError("a 'service' part is required (only protocol fio runs without one)")
        return self

    def cross_field_problems(self) -> list[tuple[tuple[int | str, ...], str]]:
        """Checks that span parts of the recipe, as (field path, message) for the loader to locate."""
        known = self.monitor.query_names() if self.monitor else set()
        problems: list[tuple[tuple[int | str, ...], str]] = []
        for i, expr in enumerate(self.slo):
            name = slo_expr.server_query(slo_expr.parse(expr))
            if name is not None and name not in known:
                hint = ", ".join(sorted(known)) or "none (add a 'monitor' part with queries or query_sets)"
                problems.append((("slo", i), f"unknown server metric {name!r} in SLO {expr!r}; known: {hint}"))
        return problems

    def slos(self) -> list[slo_expr.SLO]:
        return [slo_expr.parse(e) for e in self.slo]


class ClusterProfile(_Strict):
    """A site's batch conventions (``recipes/clusters/``): kept out of recipes so one recipe runs anywhere."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    description: str = ""
    orchestrator: Literal["local", "slurm"] = "slurm"
    shebang: Annotated[str, Field(pattern=r"^#!/\S+( -[a-z]+)?$")] = "#!/bin/bash"
    account: SlurmWord | None = None  # or UBENCHAI_SLURM_ACCOUNT
    account_required: bool = False
    partition: SlurmWord | None = None
    gpu_partition: SlurmWord | None = None  # used instead of ``partition`` when a service asks for GPUs
    qos: SlurmWord | None = None
    time: Annotated[str, Field(pattern=r"^([0-9]+-)?[0-9]+(:[0-9]{2}){0,2}$")] = "01:00:00"
    gpu_flag: Literal["gres", "gpus"] = "gres"
    modules: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+/-]+$")]] = Field(default_factory=list)
    binds: list[Annotated[str, Field(pattern=r"^[^\s,]+$")]] = Field(default_factory=list)
    scratch: str | None = None
    image_cache: str | None = None
    sbatch: list[SbatchOption] = Field(default_factory=list)
