"""The KServe v2 / Open Inference Protocol over HTTP (Triton, MLServer, KServe's model servers):
``POST /v2/models/<model>[/versions/<v>]/infer`` with typed tensors in JSON.

Bodies are built before the run: inputs given in the recipe are sent as written; inputs without data
get seeded random values of their shape and datatype, in ``variants`` distinct bodies (so a server
cannot answer from a cache of one request).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import Field, model_validator

from ..load.http import build_request
from ..load.planning import Planned, json_headers, load_plan, url_path
from ..load.responses import JsonSink
from ..orchestrators.base import Endpoint
from ..recipes.fields import PositiveInt, Strict
from ..recipes.registry import Part
from ..recipes.sweep import Case
from .base import BaseProtocol
from .prompts import unprompted

KServeType = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                     "FP16", "FP32", "FP64", "BYTES"]  # fmt: skip


class KServeInput(Strict):
    name: str
    datatype: KServeType
    shape: list[PositiveInt] = Field(min_length=1)
    data: list[object] | None = None  # flattened, row-major; null: seeded random values of the shape


class KServe(Strict):
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


DTYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip


def infer_path(model: str, version: str | None) -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"


def _random(datatype: str, shape: list[int], rng: np.random.Generator) -> list[Any]:
    n = math.prod(shape)
    if datatype == "BYTES":
        return [f"ubench-{v}" for v in rng.integers(0, 1 << 30, n).tolist()]
    kind = np.dtype(DTYPES[datatype]).kind
    if kind == "b":
        values = rng.integers(0, 2, n).astype(bool)
    elif kind in "iu":
        values = rng.integers(0, 100, n)
    else:
        values = np.round(rng.standard_normal(n), 6)
    return list(values.tolist())


def bodies(inputs: list[dict[str, Any]], outputs: list[str], variants: int, seed: int) -> list[bytes]:
    """``inputs``: name, datatype, shape and optional data (flattened, row-major, as the protocol says)."""
    rng = np.random.default_rng([seed, 5])
    out = []
    for _ in range(variants if any(i.get("data") is None for i in inputs) else 1):
        tensors = [
            {"name": i["name"], "datatype": i["datatype"], "shape": i["shape"],
             "data": i["data"] if i.get("data") is not None else _random(i["datatype"], i["shape"], rng)}
            for i in inputs
        ]  # fmt: skip
        body: dict[str, Any] = {"inputs": tensors}
        if outputs:
            body["outputs"] = [{"name": n} for n in outputs]
        out.append(orjson.dumps(body))
    return out


class InferSink(JsonSink):
    """A v2 inference response must carry ``outputs``; ``items`` is the batch (first input's first
    dimension), so ``items_per_s`` is inferences per second."""

    __slots__ = ("batch",)

    def __init__(self, rec: Any, batch: int) -> None:
        super().__init__(rec)
        self.batch = batch

    def finish(self) -> None:
        if (obj := self._parsed()) is None:
            return
        if not isinstance(obj.get("outputs"), list) or not obj["outputs"]:
            self.rec.error = "malformed_response"
            return
        self.rec.items = self.batch


class KServeV2(BaseProtocol):
    names = ("kserve-v2",)
    rate_unit = "inferences/s"
    part = Part("kserve", KServe)

    def plan(self, case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
        assert endpoint is not None
        k = case.recipe.workload.part_as(KServe)
        path = url_path(endpoint) + infer_path(k.model, k.version)
        headers = {**json_headers(case, endpoint), "Accept": "application/json"}
        reqs = [build_request("POST", endpoint.host, endpoint.port, path, body, headers)
                for body in bodies([i.model_dump() for i in k.inputs], k.outputs, k.variants, k.seed)]  # fmt: skip
        batch = k.inputs[0].shape[0]
        info = {"kind": "tensors", "prompts": 0, "model": k.model, "bodies": len(reqs), "batch": batch}  # fmt: skip
        got = unprompted(case, duration_s)
        return Planned(load_plan(case, got.arrivals, got.duration_s, reqs, sink=partial(InferSink, batch=batch)),
                       info, got.stages)  # fmt: skip


KSERVE_V2 = KServeV2()
