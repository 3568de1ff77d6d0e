"""gRPC load through grpcio's asyncio API: unary and server-streaming calls of a method described by
the user's ``.proto`` (compiled when the run starts, with grpcio-tools) or by the server's reflection
service, with a request written as JSON in the recipe.

Messages are built from descriptors at run time (no generated code to import), serialised once, and
sent as bytes; replies are counted and measured, not decoded. A server-streaming call's first message
is its TTFT and the gaps between messages its inter-message latency, exactly as tokens are for LLMs.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Annotated, Any

from pydantic import Field, field_validator

from ..load.http import RequestFailed
from ..load.planning import Planned, adapter_plan, resolve_path
from ..metrics.records import Record
from ..orchestrators import placeholders
from ..orchestrators.base import Endpoint, MissingVariable, ServiceError
from ..recipes.fields import PositiveInt, Strict, header_problem
from ..recipes.registry import Part
from ..recipes.sweep import Case
from .base import BaseProtocol


class Grpc(Strict):
    """``protocol: grpc``: unary or server-streaming calls of ``service``/``method``, described by
    ``proto`` (compiled when the run starts) or by the server's reflection service when it is null."""

    service: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")]  # full name: package.Service
    method: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    request: dict[str, object] = Field(default_factory=dict)  # the request message, protobuf's JSON mapping
    proto: str | None = None  # relative to the recipe file
    include: list[str] = Field(default_factory=list)  # import paths for the .proto, relative to the recipe
    metadata: dict[Annotated[str, Field(pattern=r"^[a-z0-9_.-]+$")], str] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _sendable(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if (problem := header_problem(name, value)) is not None:
                raise ValueError(problem)
        return v

    channels: PositiveInt = 1  # HTTP/2 connections the calls are spread over


@dataclass(frozen=True)
class GrpcCall:
    """What to call, picklable for worker processes; ``__call__`` makes the adapter inside the run's loop."""

    target: str  # host:port
    service: str  # full name: package.Service
    method: str
    request_json: str = "{}"  # the request message as JSON (protobuf's JSON mapping)
    proto: str | None = None  # a .proto file (resolved path); None: ask the server's reflection service
    include: tuple[str, ...] = ()  # extra import paths for the .proto
    metadata: tuple[tuple[str, str], ...] = ()  # values may read ${VAR}, expanded when connecting
    tls: bool = False
    channels: int = 1  # HTTP/2 connections; calls are spread over them

    def __call__(self) -> GrpcAdapter:
        return GrpcAdapter(self)

    @property
    def where(self) -> str:
        return f"grpc {self.service}/{self.method} at {self.target}"


@dataclass(frozen=True)
class Method:
    path: str  # /package.Service/Method
    server_streaming: bool
    client_streaming: bool
    request: bytes


def compile_proto(proto: Path, include: tuple[str, ...] = ()) -> bytes:
    """A serialised FileDescriptorSet for ``proto`` and its imports; protoc's own message on error."""
    import importlib.resources

    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    if not proto.is_file():
        raise ServiceError(f"workload.grpc.proto: {proto} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto.parent}", *(f"-I{i}" for i in include),
                f"-I{well_known}", "--include_imports", f"--descriptor_set_out={out}", str(proto)]  # fmt: skip
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ServiceError(f"workload.grpc.proto: protoc rejected {proto}: {done.stderr.strip()}")
        return out.read_bytes()


def pool_from(descriptor_set: bytes) -> Any:
    from google.protobuf import descriptor_pb2, descriptor_pool

    pool = descriptor_pool.DescriptorPool()
    for f in descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file:
        pool.Add(f)
    return pool


def resolve(spec: GrpcCall, pool: Any) -> Method:
    """The method's path and kind, and the request serialised once; errors name what is missing."""
    from google.protobuf import descriptor_pb2, json_format, message_factory

    try:
        svc = pool.FindServiceByName(spec.service)
    except KeyError:
        raise ServiceError(f"{spec.where}: no service {spec.service} (give its full name, package included)") from None
    method = svc.methods_by_name.get(spec.method)
    if method is None:
        known = ", ".join(sorted(svc.methods_by_name))
        raise ServiceError(f"{spec.where}: {spec.service} has no method {spec.method}; it has: {known}")
    proto = descriptor_pb2.MethodDescriptorProto()
    method.CopyToProto(proto)
    request_class = message_factory.GetMessageClass(method.input_type)
    try:
        request = json_format.Parse(spec.request_json, request_class())
    except json_format.ParseError as exc:
        raise ServiceError(f"workload.grpc.request: not a {method.input_type.full_name}: {exc}") from None
    return Method(f"/{svc.full_name}/{method.name}", proto.server_streaming, proto.client_streaming,
                  request.SerializeToString())  # fmt: skip


def _channel(spec: GrpcCall) -> Any:
    import grpc

    options = [("grpc.max_receive_message_length", 64 << 20)]
    if spec.tls:
        return grpc.aio.secure_channel(spec.target, grpc.ssl_channel_credentials(), options=options)
    return grpc.aio.insecure_channel(spec.target, options=options)


async def _reflect(spec: GrpcCall) -> Any:
    """The service's descriptors from the server's reflection service (grpcio-reflection's client)."""
    import grpc
    from google.protobuf import descriptor_pool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    def lookup() -> Any:
        creds = grpc.ssl_channel_credentials() if spec.tls else None
        channel = grpc.secure_channel(spec.target, creds) if creds else grpc.insecure_channel(spec.target)
        try:
            pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
            pool.FindServiceByName(spec.service)  # loads the file now, while the channel is open
            return pool
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "error"
            raise ServiceError(
                f"{spec.where}: server reflection failed ({code}): give workload.grpc.proto, or enable reflection"
            ) from None
        except KeyError:
            raise ServiceError(f"{spec.where}: the server's reflection does not know {spec.service}") from None
        finally:
            channel.close()

    return await asyncio.get_running_loop().run_in_executor(None, lookup)


def _failure(exc: Any, where: str) -> RequestFailed:
    import grpc

    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return RequestFailed("connect", where)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RequestFailed("timeout")
    return RequestFailed(f"grpc_{code.name.lower()}", exc.details() or "")


class GrpcAdapter:
    def __init__(self, spec: GrpcCall) -> None:
        self.spec = spec
        self.channels: list[Any] = []
        self.calls: list[Any] = []
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.method: Method | None = None

    async def open(self, connections: int) -> None:
        try:
            import grpc
        except ImportError:
            raise ServiceError("protocol grpc needs grpcio: pip install 'pytest-ubench[grpc]'") from None
        spec = self.spec
        meta = []
        for key, value in spec.metadata:
            try:
                meta.append((key, placeholders.expand(value, {})))
            except ServiceError:
                missing = ", ".join(placeholders.env_references(value))
                raise MissingVariable(
                    f"workload.grpc.metadata.{key}: environment variable {missing} is not set"
                ) from None
        self.metadata = tuple(meta)
        try:
            pool = pool_from(compile_proto(Path(spec.proto), spec.include)) if spec.proto else await _reflect(spec)
        except ImportError as exc:
            raise ServiceError(f"protocol grpc needs {exc.name}: pip install 'pytest-ubench[grpc]'") from None
        method = resolve(spec, pool)
        if method.client_streaming:
            raise ServiceError(f"{spec.where}: client-streaming methods are not supported (unary and server-streaming)")
        self.method = method
        self.channels = [_channel(spec) for _ in range(max(1, spec.channels))]
        make = "unary_stream" if method.server_streaming else "unary_unary"
        self.calls = [getattr(ch, make)(method.path) for ch in self.channels]  # bytes in, bytes out
        try:
            async with asyncio.timeout(5.0):
                await self.channels[0].channel_ready()
        except (TimeoutError, grpc.aio.AioRpcError):
            await self.close()
            raise ServiceError(f"{spec.where}: cannot connect") from None

    async def call(self, rec: Record, index: int) -> None:
        import grpc

        assert self.method is not None
        stub = self.calls[index % len(self.calls)]
        try:
            if not self.method.server_streaming:
                reply = await stub(self.method.request, metadata=self.metadata)
                rec.items, rec.nbytes = 1, len(reply)
                return
            n = size = 0
            async for reply in stub(self.method.request, metadata=self.metadata):
                t = perf_counter()
                if math.isnan(rec.first):
                    rec.first = t
                rec.chunks.append(t)
                n += 1
                size += len(reply)
            rec.items, rec.nbytes = n, size
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc, self.spec.where) from None

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close()
        self.channels, self.calls = [], []


class GrpcProtocol(BaseProtocol):
    names = ("grpc",)
    rate_unit = "messages/s"
    part = Part("grpc", Grpc)
    streams = True  # server-streaming methods

    def plan(self, case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
        assert endpoint is not None
        g = case.recipe.workload.part_as(Grpc)
        call = GrpcCall(f"{endpoint.host}:{endpoint.port}", g.service, g.method, json.dumps(g.request),
                        str(resolve_path(case, g.proto)) if g.proto else None,
                        tuple(str(resolve_path(case, i)) for i in g.include), tuple(sorted(g.metadata.items())),
                        endpoint.tls, g.channels)  # fmt: skip
        info = {"kind": "grpc", "prompts": 0, "method": f"{g.service}/{g.method}",
                "descriptors": g.proto or "server reflection"}  # fmt: skip
        return adapter_plan(case, duration_s, call, info)


GRPC = GrpcProtocol()
