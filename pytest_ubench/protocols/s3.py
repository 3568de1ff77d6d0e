"""Object storage load through boto3 (the S3 API of AWS, MinIO, Ceph RGW, or an emulator): PUT/GET/LIST
mixes with object sizes from a distribution, multipart uploads above a threshold; MB/s and latency per
operation.

boto3 is synchronous: calls run on a thread pool as large as the concurrency, so the engine's loop keeps
its schedule (the hand-off, tens of microseconds, is inside the measured latency). Objects for GETs are
uploaded before the clock starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from ..load.http import RequestFailed
from ..load.planning import Planned, adapter_plan
from ..metrics.records import Record
from ..orchestrators.base import Endpoint, ServiceError
from ..recipes.fields import ByteSize, PositiveInt, Strict, parse_bytes
from ..recipes.registry import Part
from ..recipes.sweep import Case
from .base import BaseProtocol, secret


def _one_mib() -> list[str | int]:
    return ["1MiB"]


def _put_get() -> dict[Literal["put", "get", "list"], float]:
    return {"put": 0.5, "get": 0.5}


class S3(Strict):
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


SEQUENCE = 1 << 16


@dataclass(frozen=True)
class S3Objects:
    """What to do, picklable for worker processes; ``__call__`` makes the adapter inside the run's loop."""

    endpoint_url: str
    bucket: str = "ubench"
    create_bucket: bool = True
    put_share: float = 0.5
    list_share: float = 0.0
    sizes: tuple[int, ...] = (1 << 20,)  # object sizes, drawn per request (seeded)
    keys: int = 64  # objects preloaded for GETs and overwritten by PUTs
    multipart_bytes: int = 8 << 20  # uploads at least this large go multipart
    part_bytes: int = 8 << 20
    region: str = "us-east-1"
    access_key_env: str | None = None  # read when connecting, never stored
    secret_key_env: str | None = None
    seed: int = 0

    def __call__(self) -> S3Adapter:
        return S3Adapter(self)


def key(i: int) -> str:
    return f"ubench/{i:08d}"


class S3Adapter:
    def __init__(self, spec: S3Objects) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        u = rng.random(SEQUENCE)
        self.ops = np.where(u < spec.put_share, 0, np.where(u < spec.put_share + spec.list_share, 2, 1)).tolist()
        self.keys = rng.integers(0, spec.keys, SEQUENCE).tolist()
        self.size = rng.choice(np.asarray(spec.sizes), SEQUENCE).tolist()
        self.payload = rng.bytes(max(spec.sizes))  # one buffer; each PUT sends a prefix of it
        self.client: Any = None
        self.pool: ThreadPoolExecutor | None = None
        self.where = f"s3 at {spec.endpoint_url}/{spec.bucket}"

    async def open(self, connections: int) -> None:
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
            from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
        except ImportError:
            raise ServiceError("protocol s3 needs boto3: pip install 'pytest-ubench[s3]'") from None
        spec = self.spec
        n = max(1, connections)
        self.client = boto3.client(
            "s3",
            endpoint_url=spec.endpoint_url,
            region_name=spec.region,
            aws_access_key_id=secret(spec.access_key_env, "workload.s3.access_key_env"),
            aws_secret_access_key=secret(spec.secret_key_env, "workload.s3.secret_key_env"),
            config=Config(max_pool_connections=n, retries={"max_attempts": 1}, connect_timeout=5),
        )
        self.transfer = TransferConfig(multipart_threshold=spec.multipart_bytes, multipart_chunksize=spec.part_bytes,
                                       use_threads=False)  # fmt: skip
        self.pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="ubench-s3")
        try:
            await self._run(self._prepare)
        except ClientError as exc:
            await self.close()
            raise ServiceError(f"{self.where}: {exc.response['Error'].get('Code')}: {exc}") from None
        except NoCredentialsError:
            await self.close()
            raise ServiceError(
                f"{self.where}: no credentials: name their environment variables in workload.s3.access_key_env "
                "and secret_key_env (or provide AWS credentials the usual way)"
            ) from None
        except BotoCoreError as exc:
            await self.close()
            raise ServiceError(f"{self.where}: {exc}") from None

    def _prepare(self) -> None:
        spec = self.spec
        if spec.create_bucket:
            with contextlib.suppress(self.client.exceptions.BucketAlreadyOwnedByYou):
                self.client.create_bucket(Bucket=spec.bucket)
        self.client.head_bucket(Bucket=spec.bucket)  # a missing bucket is named here, before the load
        for i in range(spec.keys):
            self._put(key(i), max(spec.sizes))

    def _put(self, name: str, size: int) -> None:
        body = io.BytesIO(memoryview(self.payload)[:size])
        self.client.upload_fileobj(body, self.spec.bucket, name, Config=self.transfer)

    def _get(self, name: str) -> int:
        return len(self.client.get_object(Bucket=self.spec.bucket, Key=name)["Body"].read())

    def _list(self) -> int:
        return int(self.client.list_objects_v2(Bucket=self.spec.bucket, Prefix="ubench/", MaxKeys=1000)["KeyCount"])

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def call(self, rec: Record, index: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

        i = index % SEQUENCE
        op = self.ops[i]
        try:
            if op == 0:
                size = self.size[i]
                await self._run(self._put, key(self.keys[i]), size)
                rec.op, rec.nbytes = "put", size
            elif op == 1:
                rec.op = "get"
                rec.nbytes = await self._run(self._get, key(self.keys[i]))
            else:
                rec.op = "list"
                rec.items = await self._run(self._list)
        except EndpointConnectionError:
            raise RequestFailed("connect", self.where) from None
        except ClientError as exc:
            raise RequestFailed(f"s3_{exc.response['Error'].get('Code', 'error')}") from None
        except BotoCoreError as exc:
            raise RequestFailed(type(exc).__name__, str(exc)) from None

    async def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if self.client is not None:
            self.client.close()
            self.client = None


class ObjectStore(BaseProtocol):
    names = ("s3",)
    part = Part("s3", S3, required=False)

    def plan(self, case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
        assert endpoint is not None
        s3 = case.recipe.workload.part_as(S3)
        total = sum(s3.mix.values())
        sizes = tuple(parse_bytes(v) for v in s3.object_sizes)
        objects = S3Objects(
            endpoint.url, s3.bucket, s3.create_bucket, s3.mix.get("put", 0.0) / total, s3.mix.get("list", 0.0) / total,
            sizes, s3.keys, parse_bytes(s3.multipart_bytes), parse_bytes(s3.part_bytes), s3.region,
            s3.access_key_env, s3.secret_key_env, s3.seed,
        )  # fmt: skip
        info = {"kind": "objects", "prompts": 0, "keys": s3.keys, "object_sizes": list(sizes)}
        return adapter_plan(case, duration_s, objects, info)


S3_OBJECTS = ObjectStore()
