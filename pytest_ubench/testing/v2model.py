"""A tiny MLServer model for the kserve-v2 protocol's tests: it sums each row of its first input (so
answers can be checked) after an optional delay (``parameters.extra.delay_ms``), so latency has a floor
the tests know."""

from __future__ import annotations

import asyncio

import numpy as np
from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class SumModel(MLModel):
    async def load(self) -> bool:
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        self.delay_s = float(extra.get("delay_ms", 0)) / 1000.0
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        first = payload.inputs[0]
        x = np.asarray(first.data.root if hasattr(first.data, "root") else first.data, dtype=np.float64)
        sums = x.reshape(first.shape[0], -1).sum(axis=1)
        out = ResponseOutput(name="sum", shape=[len(sums)], datatype="FP64", data=sums.tolist())
        return InferenceResponse(model_name=self.name, outputs=[out])
