"""``protocol: http``: any HTTP endpoint: a method, a path, headers, a body, and the status that counts as
success. For services without a dedicated protocol; records latency, status and response size.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated, Literal

from pydantic import Field, field_validator

from ..load.http import build_request
from ..load.planning import Planned, PlanVariableMissing, load_plan, url_path
from ..metrics.records import Record
from ..orchestrators import placeholders
from ..orchestrators.base import Endpoint, ServiceError
from ..recipes.fields import Strict, header_problem
from ..recipes.registry import Part
from ..recipes.sweep import Case
from .base import BaseProtocol
from .prompts import unprompted


class HttpCall(Strict):
    """``protocol: http``: one request for anything without its own protocol.

    Header values may read the environment (``Authorization: "Bearer ${TOKEN}"``); the value is read
    when the run starts and never written to results.
    """

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    path: Annotated[str, Field(pattern=r"^/\S*$")] = "/"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | dict[str, object] | list[object] | None = None  # a dict or list is sent as JSON
    expect_status: Annotated[int, Field(ge=100, le=599)] = 200

    @field_validator("headers")
    @classmethod
    def _sendable(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if (problem := header_problem(name, value)) is not None:
                raise ValueError(problem)
        return v


class StatusSink:
    """Counts the response bytes; any status but the expected one is an error named by the status."""

    __slots__ = ("expect", "rec", "status")

    def __init__(self, rec: Record, expect: int) -> None:
        self.rec = rec
        self.expect = expect
        self.status = 0

    def on_status(self, status: int, t: float) -> None:
        self.status = status
        self.rec.status = status
        self.rec.first = t  # first response byte: the time to first byte of a plain HTTP call

    def on_body(self, data: bytes, t: float) -> None:
        self.rec.nbytes += len(data)

    def finish(self) -> None:
        if self.status != self.expect:
            self.rec.error = f"http_{self.status}"


class Http(BaseProtocol):
    names = ("http",)
    part = Part("http", HttpCall)

    def plan(self, case: Case, endpoint: Endpoint | None, duration_s: float | None = None) -> Planned:
        """The one request, with ``${VAR}`` in header values read from the environment."""
        assert endpoint is not None
        call = case.recipe.workload.part_as(HttpCall)
        headers = {}
        for name, value in call.headers.items():
            try:
                headers[name] = placeholders.expand(value, {})
            except ServiceError:
                missing = ", ".join(placeholders.env_references(value))
                where = f"{case.recipe.name}: workload.http.headers.{name}"
                raise PlanVariableMissing(f"{where}: environment variable {missing} is not set") from None
        body = b""
        if isinstance(call.body, str):
            body = call.body.encode()
        elif call.body is not None:
            body = json.dumps(call.body, separators=(",", ":")).encode()
            headers.setdefault("Content-Type", "application/json")
        raw = build_request(call.method, endpoint.host, endpoint.port, url_path(endpoint) + call.path, body, headers)
        got = unprompted(case, duration_s)
        plan = load_plan(case, got.arrivals, got.duration_s, [raw], sink=partial(StatusSink, expect=call.expect_status))
        return Planned(plan, got.dataset, got.stages)


HTTP = Http()
