"""The ``routerl.v1.Router`` service: what each RPC does and which status it answers.

``RouterService`` holds a ``ModelStore`` and a ``Router``. Each RPC method takes the decoded
request and the gRPC context, and returns the response message or raises ``RpcFailure``; the
binding in ``routerl.server.handlers`` turns a failure into the gRPC status (with the offending
field in the ``routerl-field`` trailing metadata).

Status codes: INVALID_ARGUMENT (a bad field, named), NOT_FOUND (an unknown model id),
ALREADY_EXISTS (a registered id), FAILED_PRECONDITION (no candidate left after the request's
filters), DEADLINE_EXCEEDED (the caller's deadline passed), INTERNAL (a router or storage fault;
nothing is half-written).
"""

from __future__ import annotations

import inspect
import logging
import sqlite3
import threading
from contextlib import nullcontext

import grpc

from routerl.descriptors.model import DescriptorError
from routerl.routers.base import Router
from routerl.server.convert import ACTION_VALUES, apply_update_mask, descriptor_from_proto, descriptor_to_proto
from routerl.server.proto import router_pb2 as pb
from routerl.server.requests import EmptyPoolError, RequestError, RequestLimits, candidate_pool, parse_route_request
from routerl.server.store import ModelExistsError, ModelNotFoundError, ModelStore

log = logging.getLogger(__name__)


class RpcFailure(Exception):
    """An RPC's error answer: a status code, a message and, for INVALID_ARGUMENT, the field."""

    def __init__(self, code: grpc.StatusCode, message: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def _invalid(exc: RequestError | DescriptorError) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)


def _require_id(name: str, value: str) -> str:
    if not value.strip():
        raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, f"field '{name}': is required", name)
    return value


def _check_deadline(context, what: str) -> None:
    remaining = context.time_remaining() if context is not None else None
    if (remaining is not None and remaining <= 0) or (context is not None and not context.is_active()):
        raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded {what}")


class RouterService:
    """The RPC logic of ``routerl.v1.Router`` over a model store and a router."""

    def __init__(self, store: ModelStore, router: Router, limits: RequestLimits | None = None):
        self.store = store
        self.router = router
        self.limits = limits or RequestLimits()
        # Routers that do not declare themselves thread-safe are called one request at a time.
        self._router_lock = nullcontext() if getattr(router, "thread_safe", False) else threading.Lock()
        try:
            params = inspect.signature(router.decide).parameters
        except (TypeError, ValueError):
            params = {}
        self._passes_think_budget = "think_budget" in params

    # -- routing -------------------------------------------------------------------------------
    def Route(self, request: pb.RouteRequest, context) -> pb.RouteResponse:
        try:
            params = parse_route_request(request, self.limits)
        except RequestError as exc:
            raise _invalid(exc) from None
        snapshot = self.store.snapshot()
        try:
            pool = candidate_pool(snapshot.models, params)
        except EmptyPoolError as exc:
            raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
        _check_deadline(context, "before routing")
        kwargs = {"think_budget": params.think_budget} if self._passes_think_budget and params.think_budget else {}
        try:
            with self._router_lock:
                decision = self.router.decide(params.query, pool, params.knob, params.attempts, **kwargs)
        except Exception as exc:
            log.exception("router %s failed on request %s", self.router.name, params.request_id)
            raise RpcFailure(grpc.StatusCode.INTERNAL, f"router {self.router.name!r} failed: {exc}") from None
        _check_deadline(context, "while routing")
        pool_ids = {m.id for m in pool}
        if decision.action == "route" and decision.model_id not in pool_ids:
            log.error("router %s chose %r, which is not a candidate", self.router.name, decision.model_id)
            raise RpcFailure(grpc.StatusCode.INTERNAL, f"router {self.router.name!r} chose a model outside the candidate pool")
        if decision.action not in ACTION_VALUES:
            raise RpcFailure(grpc.StatusCode.INTERNAL, f"router {self.router.name!r} returned unknown action {decision.action!r}")
        log.debug("request %s -> %s %s (v%d)", params.request_id, decision.action, decision.model_id, snapshot.version)
        return pb.RouteResponse(
            model_id=decision.model_id or "",
            action=ACTION_VALUES[decision.action],
            ranking=[pb.RankedModel(model_id=m, probability=float(p)) for m, p in decision.ranking],
            think=decision.think or "",
            est_cost_usd=float(decision.est_cost_usd),
            router=decision.router or self.router.name,
            request_id=params.request_id,
            registry_version=snapshot.version,
            knob=params.knob,
        )

    # -- registry ------------------------------------------------------------------------------
    def _write(self, fn, context):
        _check_deadline(context, "before the write")
        try:
            return fn()
        except DescriptorError as exc:
            raise _invalid(exc) from None
        except ModelExistsError as exc:
            raise RpcFailure(grpc.StatusCode.ALREADY_EXISTS, str(exc)) from None
        except ModelNotFoundError as exc:
            raise RpcFailure(grpc.StatusCode.NOT_FOUND, str(exc)) from None
        except sqlite3.Error as exc:
            log.exception("registry write failed")
            raise RpcFailure(grpc.StatusCode.INTERNAL, f"registry write failed, nothing was changed: {exc}") from None

    def _descriptor(self, request, name: str = "model"):
        if not request.HasField("model"):
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, f"field '{name}': is required", name)
        try:
            return descriptor_from_proto(request.model, prefix=name)
        except DescriptorError as exc:
            raise _invalid(exc) from None

    def RegisterModel(self, request: pb.RegisterModelRequest, context) -> pb.RegisterModelResponse:
        desc = self._descriptor(request)
        version = self._write(lambda: self.store.add(desc), context)
        log.info("registered model %s (registry v%d)", desc.id, version)
        return pb.RegisterModelResponse(model=descriptor_to_proto(desc), registry_version=version)

    def UpdateModel(self, request: pb.UpdateModelRequest, context) -> pb.UpdateModelResponse:
        if not request.HasField("model"):
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, "field 'model': is required", "model")
        model_id = _require_id("model.id", request.model.id)

        def update():
            current = self.store.get(model_id)
            desc = apply_update_mask(current, request.model, request.update_mask.paths, prefix="model")
            return desc, self.store.update(desc)

        desc, version = self._write(update, context)
        log.info("updated model %s (registry v%d)", desc.id, version)
        return pb.UpdateModelResponse(model=descriptor_to_proto(desc), registry_version=version)

    def RemoveModel(self, request: pb.RemoveModelRequest, context) -> pb.RemoveModelResponse:
        model_id = _require_id("id", request.id)
        version = self._write(lambda: self.store.remove(model_id), context)
        log.info("removed model %s (registry v%d)", model_id, version)
        return pb.RemoveModelResponse(registry_version=version)

    def GetModel(self, request: pb.GetModelRequest, context) -> pb.GetModelResponse:
        model_id = _require_id("id", request.id)
        snapshot = self.store.snapshot()
        desc = snapshot.get(model_id)
        if desc is None:
            raise RpcFailure(grpc.StatusCode.NOT_FOUND, str(ModelNotFoundError(model_id)))
        return pb.GetModelResponse(model=descriptor_to_proto(desc), registry_version=snapshot.version)

    def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        snapshot = self.store.snapshot()
        return pb.ListModelsResponse(models=[descriptor_to_proto(m) for m in snapshot.models], registry_version=snapshot.version)
