"""The KServe v2 / Open Inference Protocol over HTTP (Triton, MLServer, KServe's model servers):
``POST /v2/models/<model>[/versions/<v>]/infer`` with typed tensors in JSON.

Bodies are built before the run: inputs given in the recipe are sent as written; inputs without data
get seeded random values of their shape and datatype, in ``variants`` distinct bodies (so a server
cannot answer from a cache of one request).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from .openai import JsonSink

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
        return rng.integers(0, 2, n).astype(bool).tolist()
    if kind in "iu":
        return rng.integers(0, 100, n).tolist()
    return np.round(rng.standard_normal(n), 6).tolist()


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
