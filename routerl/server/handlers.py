"""Bind a ``RouterService`` to gRPC: strict decoding, auth, load limits, metrics, access log.

Each RPC of ``routerl.v1.Router`` goes through one wrapper that, in order:

1. takes the request id (``x-request-id`` metadata; for ``Route`` the ``request_id`` field wins;
   else a new one) and returns it in the ``routerl-request-id`` trailing metadata, on errors too;
2. checks the bearer token (``routerl.server.auth``): UNAUTHENTICATED / PERMISSION_DENIED;
3. takes a slot of its lane (``routerl.server.admission``; ``Route`` has its own lane, the
   registry calls share the other): RESOURCE_EXHAUSTED when the queue is full or the wait too long;
4. parses the raw request bytes itself, so a request that does not parse (corrupt bytes, invalid
   UTF-8 in a string field) gets INVALID_ARGUMENT naming the message type instead of grpc's
   generic INTERNAL "Exception deserializing request!", and the server carries on;
5. calls the service; ``RpcFailure`` becomes its status (the field at fault in the
   ``routerl-field`` trailing metadata); any other exception is logged and answered INTERNAL;
6. counts the call in the Prometheus metrics and writes one JSON access-log line.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError

from routerl.server.admission import Lane, Overloaded
from routerl.server.auth import AuthFailure, TokenAuth
from routerl.server.convert import ACTION_NAMES, FIELD_METADATA_KEY, MODE_NAMES
from routerl.server.observe import (
    RESPONSE_ID_METADATA_KEY,
    ServerMetrics,
    log_access,
    metadata_request_id,
    new_request_id,
    valid_request_id,
)
from routerl.server.proto import router_pb2 as pb
from routerl.server.service import RouterService, RpcFailure

log = logging.getLogger(__name__)

SERVICE_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["Router"]
SERVICE_NAME = SERVICE_DESCRIPTOR.full_name  # "routerl.v1.Router"
MAX_LOGGED_QUERY_CHARS = 2_000


@dataclass
class CallGuard:
    """What wraps every call: auth, the two lanes, metrics and access-log settings."""

    auth: TokenAuth = field(default_factory=TokenAuth)
    route_lane: Lane | None = None
    registry_lane: Lane | None = None
    metrics: ServerMetrics | None = None
    access_log: bool = True
    log_queries: bool = False
    default_mode: str = "balanced"


def _mode_label(request: pb.RouteRequest, default_mode: str) -> str:
    which = request.WhichOneof("cost")
    if which == "knob":
        return "knob"
    if which == "mode" and request.mode in MODE_NAMES:
        return MODE_NAMES[request.mode]
    return default_mode


def _subject(method_name: str, request) -> str | None:
    """The model id a registry call is about (for the access log)."""
    if request is None:
        return None
    if method_name in ("RegisterModel", "UpdateModel"):
        return request.model.id or None
    if method_name in ("RemoveModel", "GetModel"):
        return request.id or None
    return None


def _unary_handler(service: RouterService, method_name: str, request_type, response_type, guard: CallGuard):
    method = getattr(service, method_name)
    is_route = method_name == "Route"
    lane = guard.route_lane if is_route else guard.registry_lane

    def handle(raw: bytes, context: grpc.ServicerContext):
        start = time.perf_counter()
        metadata = context.invocation_metadata()
        request_id = metadata_request_id(metadata)
        request = response = None
        code, message, bad_field = grpc.StatusCode.OK, "", None
        try:
            guard.auth.check(method_name, metadata)
            with lane.admit(context) if lane is not None else nullcontext():
                try:
                    request = request_type.FromString(raw)
                except DecodeError as exc:
                    raise RpcFailure(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"request is not a valid {request_type.DESCRIPTOR.full_name} message: {exc}",
                    ) from None
                if is_route:
                    if request.request_id:
                        request_id = request.request_id if valid_request_id(request.request_id) else None
                    else:
                        request_id = request_id or new_request_id()
                        request.request_id = request_id
                response = method(request, context)
        except (RpcFailure, AuthFailure, Overloaded) as failure:
            code, message, bad_field = failure.code, failure.message, getattr(failure, "field", None)
        except Exception:
            log.exception("%s/%s failed (request %s)", SERVICE_NAME, method_name, request_id)
            code, message = grpc.StatusCode.INTERNAL, f"internal error in {method_name} (see the server log)"
        request_id = request_id or new_request_id()
        seconds = time.perf_counter() - start
        _record(guard, method_name, code, seconds, request_id, request, response, context)

        trailing = [(RESPONSE_ID_METADATA_KEY, request_id)]
        if bad_field:
            trailing.append((FIELD_METADATA_KEY, bad_field))
        context.set_trailing_metadata(tuple(trailing))
        if code != grpc.StatusCode.OK:
            context.abort(code, message)
        return response

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=None, response_serializer=response_type.SerializeToString
    )


def _record(guard: CallGuard, method_name: str, code: grpc.StatusCode, seconds: float, request_id: str,
            request, response, context) -> None:
    """Metrics and the access-log line of one call (never raises)."""
    try:
        is_route = method_name == "Route"
        mode = _mode_label(request, guard.default_mode) if is_route and request is not None else None
        if guard.metrics is not None:
            guard.metrics.observe_call(method_name, code.name, seconds)
            if is_route and response is not None:
                guard.metrics.observe_route(response.router, mode, response.model_id or "-",
                                            ACTION_NAMES.get(response.action, "unspecified"), response.est_cost_usd, seconds)
        if not guard.access_log:
            return
        record = {
            "request_id": request_id,
            "method": method_name,
            "status": code.name,
            "latency_ms": round(seconds * 1000, 3),
            "peer": context.peer(),
        }
        if is_route:
            record["mode"] = mode
            if response is not None:
                record.update(
                    router=response.router,
                    knob=response.knob,
                    model=response.model_id,
                    action=ACTION_NAMES.get(response.action, "unspecified"),
                    est_cost_usd=response.est_cost_usd,
                    registry_version=response.registry_version,
                )
            if guard.log_queries and request is not None:
                record["query"] = request.query[:MAX_LOGGED_QUERY_CHARS]
                if len(request.query) > MAX_LOGGED_QUERY_CHARS:
                    record["query_truncated"] = True
        else:
            record["model"] = _subject(method_name, request)
            if response is not None and hasattr(response, "registry_version"):
                record["registry_version"] = response.registry_version
        log_access(record)
    except Exception:  # noqa: BLE001 - observability must never fail a call
        log.exception("recording %s failed", method_name)


def method_handlers(service: RouterService, guard: CallGuard | None = None) -> dict[str, grpc.RpcMethodHandler]:
    """One strict unary handler per RPC of the ``Router`` service."""
    guard = guard or CallGuard()
    handlers = {}
    for method in SERVICE_DESCRIPTOR.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        handlers[method.name] = _unary_handler(service, method.name, request_type, response_type, guard)
    return handlers


def add_router_service(server: grpc.Server, service: RouterService, guard: CallGuard | None = None) -> None:
    """Register ``service`` on ``server`` under ``routerl.v1.Router``."""
    handlers = method_handlers(service, guard)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
