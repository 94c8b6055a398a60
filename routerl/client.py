"""A small Python client for the routerl gRPC service.

    from routerl.client import RouterClient
    from routerl.descriptors import ModelDescriptor

    with RouterClient("localhost:50051", timeout=5.0) as client:
        result = client.route("What is 17 * 23?", mode="cost")
        print(result.model_id, result.ranking)
        client.register_model(ModelDescriptor(id="my-model", input_price_per_mtok=0.1,
                                              output_price_per_mtok=0.4,
                                              sample_scores={"math_grade_school": 0.9}))

Models go in and out as ``routerl.descriptors.ModelDescriptor``; a failed call raises
``RouterClientError`` with the gRPC ``code``, the server's message and, for INVALID_ARGUMENT,
the ``field`` at fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from routerl.descriptors.model import ModelDescriptor
from routerl.routers.base import Attempt
from routerl.server.convert import (
    ACTION_NAMES,
    FIELD_METADATA_KEY,
    MODE_VALUES,
    UPDATABLE_FIELDS,
    descriptor_from_proto,
    descriptor_to_proto,
)
from routerl.server.proto import router_pb2 as pb
from routerl.server.proto import router_pb2_grpc as pb_grpc

DEFAULT_TARGET = "localhost:50051"


class RouterClientError(Exception):
    """A failed call: ``code`` (a ``grpc.StatusCode``), ``details`` and the ``field`` at fault."""

    def __init__(self, code: grpc.StatusCode, details: str, field: str | None = None):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.field = field

    @classmethod
    def from_rpc_error(cls, exc: grpc.RpcError) -> "RouterClientError":
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
        fld = None
        if hasattr(exc, "trailing_metadata"):
            for key, value in exc.trailing_metadata() or ():
                if key == FIELD_METADATA_KEY:
                    fld = value
        return cls(code, details, fld)


@dataclass
class RouteResult:
    """The answer of ``route()``: a ``Decision`` plus the request id and registry version."""

    model_id: str
    action: str
    ranking: list[tuple[str, float]] = field(default_factory=list)
    think: str = ""
    est_cost_usd: float = 0.0
    router: str = ""
    request_id: str = ""
    registry_version: int = 0
    knob: float = 0.0

    @property
    def fallbacks(self) -> list[str]:
        """Model ids to try in order after ``model_id`` fails."""
        return [m for m, _ in self.ranking if m != self.model_id]

    def to_dict(self) -> dict:
        return {
            "model_id": self.model_id,
            "action": self.action,
            "ranking": [{"model_id": m, "probability": p} for m, p in self.ranking],
            "think": self.think,
            "est_cost_usd": self.est_cost_usd,
            "router": self.router,
            "request_id": self.request_id,
            "registry_version": self.registry_version,
            "knob": self.knob,
        }


def build_route_request(
    query: str,
    *,
    mode: str | None = None,
    knob: float | None = None,
    allow: Iterable[str] = (),
    deny: Iterable[str] = (),
    max_input_price_per_mtok: float | None = None,
    max_output_price_per_mtok: float | None = None,
    max_est_cost_usd: float | None = None,
    min_context_window: int | None = None,
    think_budget: int = 0,
    attempts: Sequence[Attempt | tuple[str, str]] = (),
    domain: str | None = None,
    prompt_tokens: int | None = None,
    request_id: str | None = None,
) -> pb.RouteRequest:
    """The ``RouteRequest`` message for these arguments (``mode`` and ``knob`` exclude each other)."""
    if mode is not None and knob is not None:
        raise ValueError("give either mode or knob, not both")
    req = pb.RouteRequest(
        query=query,
        allow=list(allow),
        deny=list(deny),
        think_budget=think_budget,
        domain=domain or "",
        prompt_tokens=prompt_tokens or 0,
        request_id=request_id or "",
    )
    if knob is not None:
        req.knob = float(knob)
    elif mode is not None:
        if mode not in MODE_VALUES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODE_VALUES)}")
        req.mode = MODE_VALUES[mode]
    limits = {
        "max_input_price_per_mtok": max_input_price_per_mtok,
        "max_output_price_per_mtok": max_output_price_per_mtok,
        "max_est_cost_usd": max_est_cost_usd,
        "min_context_window": min_context_window,
    }
    if any(v is not None for v in limits.values()):
        req.limits.CopyFrom(pb.Limits(**{k: v for k, v in limits.items() if v is not None}))
    for att in attempts:
        if not isinstance(att, Attempt):
            att = Attempt(*att)
        req.attempts.add(model_id=att.model_id, response=att.response, cost_usd=att.cost_usd)
    return req


class RouterClient:
    """Calls a routerl server at ``target`` (``host:port``); ``timeout`` is each call's deadline in
    seconds (``None``: no deadline). Use as a context manager or call ``close()``."""

    def __init__(self, target: str = DEFAULT_TARGET, timeout: float | None = 10.0, *, max_message_bytes: int | None = None,
                 channel: grpc.Channel | None = None):
        if timeout is not None and (math.isnan(timeout) or timeout <= 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
        self.target = target
        self.timeout = timeout
        options = []
        if max_message_bytes:
            options = [("grpc.max_send_message_length", max_message_bytes), ("grpc.max_receive_message_length", max_message_bytes)]
        self._own_channel = channel is None
        self.channel = channel or grpc.insecure_channel(target, options=options)
        self._stub = pb_grpc.RouterStub(self.channel)

    def _call(self, method: str, request, timeout: float | None = None):
        try:
            return getattr(self._stub, method)(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as exc:
            raise RouterClientError.from_rpc_error(exc) from None

    # -- routing -------------------------------------------------------------------------------
    def route(self, query: str, *, timeout: float | None = None, **options) -> RouteResult:
        """Route ``query``; ``options`` are those of ``build_route_request`` (mode or knob, allow,
        deny, limits, think_budget, attempts, domain, prompt_tokens, request_id)."""
        resp = self._call("Route", build_route_request(query, **options), timeout)
        return RouteResult(
            model_id=resp.model_id,
            action=ACTION_NAMES.get(resp.action, "unspecified"),
            ranking=[(r.model_id, r.probability) for r in resp.ranking],
            think=resp.think,
            est_cost_usd=resp.est_cost_usd,
            router=resp.router,
            request_id=resp.request_id,
            registry_version=resp.registry_version,
            knob=resp.knob,
        )

    # -- registry ------------------------------------------------------------------------------
    def register_model(self, model: ModelDescriptor) -> ModelDescriptor:
        resp = self._call("RegisterModel", pb.RegisterModelRequest(model=descriptor_to_proto(model)))
        return descriptor_from_proto(resp.model)

    def update_model(self, model: ModelDescriptor, fields: Iterable[str] | None = None) -> ModelDescriptor:
        """Replace ``model.id``'s descriptor with ``model``, or only ``fields`` of it."""
        req = pb.UpdateModelRequest(model=descriptor_to_proto(model))
        for name in fields or ():
            if name not in UPDATABLE_FIELDS:
                raise ValueError(f"cannot update field {name!r}; updatable: {', '.join(UPDATABLE_FIELDS)}")
            req.update_mask.paths.append(name)
        resp = self._call("UpdateModel", req)
        return descriptor_from_proto(resp.model)

    def remove_model(self, model_id: str) -> int:
        """Remove a model; returns the new registry version."""
        return self._call("RemoveModel", pb.RemoveModelRequest(id=model_id)).registry_version

    def get_model(self, model_id: str) -> ModelDescriptor:
        return descriptor_from_proto(self._call("GetModel", pb.GetModelRequest(id=model_id)).model)

    def list_models(self) -> list[ModelDescriptor]:
        return [descriptor_from_proto(m) for m in self._call("ListModels", pb.ListModelsRequest()).models]

    def registry_version(self) -> int:
        return self._call("ListModels", pb.ListModelsRequest()).registry_version

    # -- health --------------------------------------------------------------------------------
    def health(self, service: str = "") -> str:
        """The server's health status name (``SERVING``, ``NOT_SERVING``, ...)."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise RouterClientError.from_rpc_error(exc) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def close(self) -> None:
        if self._own_channel:
            self.channel.close()

    def __enter__(self) -> "RouterClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
