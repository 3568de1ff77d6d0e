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
from typing import Any

import numpy as np

from ...metrics.records import Record
from ...orchestrators.base import ServiceError
from ..http import RequestFailed
from . import secret

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
