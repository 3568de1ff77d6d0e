"""Typed recipe models; validation errors name the field path, the loader adds file and line.

A list where a scalar is expected in ``workload.load`` marks a sweep; the models accept both so one
schema validates the recipe as written, and ``sweep.expand`` turns it into one point per case.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from ..metrics import compare
from ..metrics import server_queries as queries
from ..metrics import slo as slo_expr
from . import registry
from .deployment import MonitorImages, Resources, ServiceSpec
from .fields import (
    ByteSize,
    Name,
    PositiveFloat,
    PositiveInt,
    Strict,
    parse_bytes,
)

M = TypeVar("M", bound=BaseModel)


class LengthDistribution(Strict):
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


class Dataset(Strict):
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


class Ramp(Strict):
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


class Bursts(Strict):
    """``size`` extra requests at once every ``every_s`` seconds, on top of the arrivals."""

    every_s: PositiveFloat
    size: PositiveInt


class Trace(Strict):
    """Replay of a JSONL trace: ``{"timestamp": s, ...}`` plus a prompt, messages or a whole ``body``."""

    path: str  # relative to the recipe file
    speed: PositiveFloat = 1.0  # 2 replays twice as fast


class Load(Strict):
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
    slo: list[slo_expr.SLOField] = Field(default_factory=list)  # default: the recipe's SLOs
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


class Timeouts(Strict):
    connect_s: PositiveFloat = 5.0
    request_s: PositiveFloat = 120.0
    setup_s: PositiveFloat = 600.0  # a protocol's setup before the load: connect, preload, build a collection
    side_s: PositiveFloat = 10.0  # each call beside the load (health probe, /tokenize, /detokenize)


DEFAULT_PROTOCOL = "openai-chat"


class Workload(Strict):
    """What load, of which protocol; the protocol's own part (``kv``, ``sql``, ...) is validated by the
    model the protocol registers (``recipes.registry``) and read back with ``part_as``."""

    protocol: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")] = DEFAULT_PROTOCOL
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
    batch_size: PositiveInt = 1  # inputs per request, for protocols that batch (openai-embeddings)
    max_frame_bytes: ByteSize = "4MiB"  # a streamed frame or a JSON reply beyond it fails its request
    # Long runs: every this many seconds the records so far go to disk and results.json gets the figures
    # so far (marked partial); a killed run keeps both. 0: never (docs/records.md).
    checkpoint_s: Annotated[float, Field(ge=0)] = 60.0
    _part: BaseModel | None = PrivateAttr(None)

    @field_validator("max_frame_bytes")
    @classmethod
    def _a_size(cls, v: object) -> object:
        parse_bytes(v)
        return v

    @property
    def part(self) -> BaseModel | None:
        """The protocol's own part, validated, defaults filled; None for protocols without one."""
        return self._part

    def part_as(self, model: type[M]) -> M:
        """The protocol's part as its model (what the protocol's own module reads)."""
        if not isinstance(self._part, model):
            raise TypeError(f"protocol {self.protocol!r} has no {model.__name__} part")
        return self._part

    @model_validator(mode="wrap")
    @classmethod
    def _protocol_part(cls, data: Any, handler: ModelWrapValidatorHandler[Workload]) -> Workload:
        if not isinstance(data, dict):
            return handler(data)
        name = data.get("protocol", DEFAULT_PROTOCOL)
        owners = registry.part_owners()
        given = {k: v for k, v in data.items() if k in owners}
        errors: list[ErrorDetails] = []
        workload = None
        try:
            workload = handler({k: v for k, v in data.items() if k not in owners})
        except ValidationError as exc:
            errors += exc.errors()
        try:
            proto = registry.find(name) if isinstance(name, str) else None
        except registry.ProtocolNotFound as exc:
            # The keys it does not know may be that protocol's part: the unknown name is the one problem.
            errors = [e for e in errors if e["type"] != "extra_forbidden"]
            errors.append(_error(("protocol",), str(exc), name))
            proto = None
        own = proto.part if proto is not None else None
        part = None
        for key, value in given.items():
            if own is None or key != own.key:
                if proto is not None:
                    goes_with = " or ".join(owners[key])
                    errors.append(_error((key,), f"a '{key}' part goes with 'protocol: {goes_with}'", value))
                continue
            try:
                part = own.model.model_validate(value)
            except ValidationError as exc:
                errors += [{**e, "loc": (key, *e["loc"])} for e in exc.errors()]
        if own is not None and part is None and own.key not in given:
            if own.required:
                errors.append(_error((), f"'protocol: {name}' needs a '{own.key}' part (docs/recipes.md)", data))
            else:
                part = own.model()
        if workload is not None and proto is not None:
            if workload.stream and not proto.streams:
                errors.append(_error(("stream",), f"'{name}' does not stream: set 'stream: false'", True))
            if workload.batch_size > 1 and not proto.batches:
                errors.append(_error(("batch_size",), f"'{name}' takes one input per request: 'batch_size' is for "
                                     "protocols that batch (openai-embeddings)", workload.batch_size))  # fmt: skip
        if errors or workload is None:
            raise ValidationError.from_exception_data(cls.__name__, [_init(e) for e in errors])
        workload._part = part
        return workload

    @model_serializer(mode="wrap")
    def _with_part(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        proto = registry.find(self.protocol)
        if self._part is not None and proto.part is not None:
            out[proto.part.key] = self._part.model_dump(mode=info.mode, by_alias=info.by_alias)
        return out


def _error(loc: tuple[int | str, ...], message: str, value: object) -> ErrorDetails:
    return {"type": "value_error", "loc": loc, "msg": message, "input": value}


def _init(e: ErrorDetails) -> InitErrorDetails:
    """A validation error handed on as it was (type, place, message), whatever its origin."""
    text = e["msg"].removeprefix("Value error, ").replace("{", "{{").replace("}", "}}")
    return {"type": PydanticCustomError(e["type"], text), "loc": e["loc"], "input": e["input"]}


class Monitor(Strict):
    """Server-side metrics: Prometheus deployed with the service, queries evaluated per case window."""

    enabled: bool = True
    interval_s: PositiveFloat = 1.0
    retention: str = "1d"
    query_sets: list[Literal["llamacpp", "vllm", "node", "dcgm"]] = Field(default_factory=list)
    queries: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], str] = Field(default_factory=dict)
    targets: list[Annotated[str, Field(pattern=r"^[^\s/:]+:\d+$")]] = Field(default_factory=list)
    target_timeout_s: PositiveFloat = 30.0
    # Images for the monitoring parts, over the cluster profile's monitor_images (a newer exporter, a
    # site's mirror); where given, that part runs from its image (Apptainer) wherever the recipe runs.
    images: MonitorImages = Field(default_factory=MonitorImages)

    def query_names(self) -> set[str]:
        return set(queries.named(self.query_sets, self.queries, ".*"))

    def parts(self, gpus: int) -> list[str]:
        """What this monitoring runs beside a service with ``gpus`` GPUs per node: Prometheus, a node
        exporter for the node set, the DCGM exporter for the dcgm set (with GPUs only)."""
        wanted = {"node": "node_exporter", "dcgm": "dcgm_exporter" if gpus else None}
        return ["prometheus", *(part for name, part in wanted.items() if part and name in self.query_sets)]


class GrafanaServer(Strict):
    """Grafana run by ``ubenchai monitor start`` from its image (Apptainer), provisioned for the monitor."""

    image: Annotated[str, Field(pattern=r"^\S+$")] = "docker://grafana/grafana-oss:11.3.0"
    command: list[str] = Field(default_factory=lambda: ["grafana", "server", "--homepath=/usr/share/grafana"])
    host: str = "127.0.0.1"  # reach it through an ssh tunnel (printed), or say 0.0.0.0


class MonitorRecipe(Monitor):
    """A standalone monitor (``recipes/monitors/``) for ``ubenchai monitor start``."""

    kind: Literal["monitor"] = "monitor"  # optional in a file under monitors/; required elsewhere
    name: Name
    description: str = ""
    grafana: GrafanaServer | None = None


class Regression(Strict):
    """When a case counts as a regression against its baseline (see ``metrics/compare.py``)."""

    min_change: Annotated[float, Field(gt=0)] = 0.10  # relative change of the metric's centre
    metrics: dict[
        Literal["ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "requests_per_s", "output_tokens_per_s", "recall"],
        Annotated[float, Field(gt=0)],
    ] = Field(default_factory=dict)  # per-metric min_change (recall's default: 0.01)
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.01  # the chance an unchanged case fails (alpha / k per metric)
    # A flagged case is measured again on a fresh deployment and fails only when that run is flagged too:
    # a fresh server process sometimes starts in a slow state (measured on the main job: 4 of 20 sessions,
    # ITL +60 %), which a baseline of 5 runs often never saw. 0: the first flag fails.
    confirm: Annotated[int, Field(ge=0, le=5)] = 1
    # Absolute floors per metric, in its unit: a change smaller is jitter (defaults: compare.DEFAULT_MIN_ABS).
    min_abs: dict[
        Literal["ttft_ms", "itl_ms", "tpot_ms", "e2e_ms", "requests_per_s", "output_tokens_per_s", "recall"],
        Annotated[float, Field(ge=0)],
    ] = Field(default_factory=dict)

    def thresholds(self) -> dict[str, float]:
        """The smallest relative change that counts, per compared metric."""
        own: dict[str, float] = {str(k): v for k, v in self.metrics.items()}
        return {m: own.get(m, compare.DEFAULT_MIN_CHANGE.get(m, self.min_change))
                for m in (*compare.LOWER_IS_BETTER, *compare.HIGHER_IS_BETTER)}  # fmt: skip

    def floors(self) -> dict[str, float]:
        """The smallest absolute change that counts, per metric."""
        return compare.DEFAULT_MIN_ABS | {str(k): v for k, v in self.min_abs.items()}


class Recipe(Strict):
    kind: Literal["benchmark"] = "benchmark"  # the default: cluster profiles and monitor recipes say theirs
    name: Name
    description: str = ""
    service: ServiceSpec | None = None  # none only for protocols that talk to no service
    workload: Workload
    monitor: Monitor | None = None
    slo: list[slo_expr.SLOField] = Field(default_factory=list)
    regression: Regression = Field(default_factory=Regression)
    strict_samples: bool = False  # an SLO on an under-sampled percentile fails instead of passing with a note
    strict_client: bool = False  # a run whose client was likely the bottleneck fails instead of warning

    @model_validator(mode="after")
    def _service_if_needed(self) -> Recipe:
        needs = registry.find(self.workload.protocol).needs_service
        if self.service is None and needs:
            raise ValueError(f"a 'service' part is required (protocol {self.workload.protocol} talks to a service)")
        if self.service is not None and not needs:
            raise ValueError(f"protocol {self.workload.protocol} starts no service: leave out the 'service' part")
        return self

    def slos(self) -> list[slo_expr.SLO]:
        """The SLOs, parsed when the recipe was loaded."""
        return list(self.slo)

    def cross_field_problems(self) -> list[tuple[tuple[int | str, ...], str]]:
        """Checks that span parts of the recipe, as (field path, message) for the loader to locate."""
        known = self.monitor.query_names() if self.monitor else set()
        problems: list[tuple[tuple[int | str, ...], str]] = []
        for i, slo in enumerate(self.slo):
            name, expr = slo_expr.server_query(slo), slo.expression
            if name is not None and name not in known:
                hint = ", ".join(sorted(known)) or "none (add a 'monitor' part with queries or query_sets)"
                problems.append((("slo", i), f"unknown server metric {name!r} in SLO {expr!r}; known: {hint}"))
        return problems
