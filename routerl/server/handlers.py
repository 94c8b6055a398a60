"""Bind a ``RouterService`` to gRPC: strict decoding, auth, load limits, metrics, access log.

Each RPC of ``routerl.v1.Router`` goes through one wrapper that, in order:

1. takes the request id (``x-request-id`` metadata; for ``Route`` and ``Complete(Stream)`` the
   ``request_id`` field wins; else a new one) and returns it in the ``routerl-request-id``
   trailing metadata, on errors too;
2. checks the bearer token (``routerl.server.auth``): UNAUTHENTICATED / PERMISSION_DENIED;
3. takes a slot of its lane (``routerl.server.admission``; ``Route`` has its own lane,
   ``Complete`` and ``CompleteStream`` share a third one, the registry calls share the other):
   RESOURCE_EXHAUSTED when the queue is full or the wait too long; a stream holds its slot until
   it ends;
4. parses the raw request bytes itself, so a request that does not parse (corrupt bytes, invalid
   UTF-8 in a string field) gets INVALID_ARGUMENT naming the message type instead of grpc's
   generic INTERNAL "Exception deserializing request!", and the server carries on;
5. for ``Complete(Stream)``, resolves the caller's key (``routerl.server.complete.resolve_key``:
   ``routerl-key-id`` metadata, the ``key_id`` field, the token's role, ``anonymous``);
6. calls the service; ``RpcFailure`` becomes its status (the field at fault in the
   ``routerl-field`` trailing metadata, plus the failure's own metadata such as ``routerl-stop``);
   any other exception is logged and answered INTERNAL;
7. counts the call in the Prometheus metrics and writes one JSON access-log line.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError

from routerl.descriptors.model import shown_id
from routerl.server.admission import Lane, Overloaded
from routerl.server.auth import AuthFailure, TokenAuth
from routerl.server.complete import ATTEMPT_STATUS_NAMES, STOP_METADATA_KEY, STOP_NAMES, resolve_key
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
from routerl.server.requests import RequestError
from routerl.server.service import RouterService, RpcFailure

log = logging.getLogger(__name__)

SERVICE_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["Router"]
SERVICE_NAME = SERVICE_DESCRIPTOR.full_name  # "routerl.v1.Router"
MAX_LOGGED_QUERY_CHARS = 2_000


COMPLETE_METHODS = frozenset({"Complete", "CompleteStream"})
_ID_FIELD_METHODS = COMPLETE_METHODS | {"Route"}  # requests with a request_id field


@dataclass
class CallGuard:
    """What wraps every call: auth, the three lanes, metrics and access-log settings."""

    auth: TokenAuth = field(default_factory=TokenAuth)
    route_lane: Lane | None = None
    registry_lane: Lane | None = None
    complete_lane: Lane | None = None
    metrics: ServerMetrics | None = None
    access_log: bool = True
    log_queries: bool = False
    default_mode: str = "balanced"

    def lane(self, method_name: str) -> Lane | None:
        if method_name == "Route":
            return self.route_lane
        if method_name in COMPLETE_METHODS:
            return self.complete_lane
        return self.registry_lane


def _mode_label(request, default_mode: str) -> str:
    which = request.WhichOneof("cost")
    if which == "knob":
        return "knob"
    if which == "mode" and request.mode in MODE_NAMES:
        return MODE_NAMES[request.mode]
    return default_mode


def _subject(method_name: str, request) -> str | None:
    """The model id a registry call is about, for the access log (an overlong one shortened:
    ``shown_id``)."""
    if request is None:
        return None
    if method_name in ("RegisterModel", "UpdateModel"):
        model_id = request.model.id
    elif method_name in ("RemoveModel", "GetModel"):
        model_id = request.id
    else:
        return None
    return shown_id(model_id) or None


class _Call:
    """The state of one call shared by the unary and the streaming wrappers."""

    def __init__(self, guard: CallGuard, method_name: str, request_type, context):
        self.guard = guard
        self.method_name = method_name
        self.request_type = request_type
        self.context = context
        self.start = time.perf_counter()
        self.metadata = context.invocation_metadata()
        self.request_id = metadata_request_id(self.metadata)
        self.request = self.response = None
        self.key: str | None = None
        self.code, self.message, self.bad_field, self.extra = grpc.StatusCode.OK, "", None, ()

    def admit(self):
        lane = self.guard.lane(self.method_name)
        return lane.admit(self.context) if lane is not None else nullcontext()

    def decode(self, raw: bytes, role: str | None) -> dict:
        """Parse the request, take its request id and (Complete) the caller's key; the keyword
        arguments of the service method."""
        try:
            request = self.request_type.FromString(raw)
        except DecodeError as exc:
            raise RpcFailure(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"request is not a valid {self.request_type.DESCRIPTOR.full_name} message: {exc}",
            ) from None
        self.request = request
        if self.method_name in _ID_FIELD_METHODS:
            if request.request_id:
                self.request_id = request.request_id if valid_request_id(request.request_id) else None
            else:
                self.request_id = self.request_id or new_request_id()
                request.request_id = self.request_id
        if self.method_name not in COMPLETE_METHODS:
            return {}
        try:
            self.key = resolve_key(self.metadata, request.key_id, role)
        except RequestError as exc:
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field) from None
        return {"key": self.key}

    def fail(self, failure) -> None:
        self.code, self.message = failure.code, failure.message
        self.bad_field = getattr(failure, "field", None)
        self.extra = getattr(failure, "metadata", ())

    def internal(self) -> None:
        log.exception("%s/%s failed (request %s)", SERVICE_NAME, self.method_name, self.request_id)
        self.code, self.message = grpc.StatusCode.INTERNAL, f"internal error in {self.method_name} (see the server log)"

    def finish(self, *, abort: bool = True) -> None:
        """Record the call, set the trailing metadata and, on an error, abort with its status."""
        self.request_id = self.request_id or new_request_id()
        seconds = time.perf_counter() - self.start
        _record(self.guard, self.method_name, self.code, seconds, self.request_id, self.request, self.response,
                self.context, key=self.key, extra=self.extra)
        trailing = [(RESPONSE_ID_METADATA_KEY, self.request_id)]
        if self.bad_field:
            trailing.append((FIELD_METADATA_KEY, self.bad_field))
        trailing.extend(self.extra)
        self.context.set_trailing_metadata(tuple(trailing))
        if abort and self.code != grpc.StatusCode.OK:
            self.context.abort(self.code, self.message)


def _unary_handler(service: RouterService, method_name: str, request_type, response_type, guard: CallGuard):
    method = getattr(service, method_name)

    def handle(raw: bytes, context: grpc.ServicerContext):
        call = _Call(guard, method_name, request_type, context)
        try:
            role = guard.auth.check(method_name, call.metadata)
            with call.admit():
                kwargs = call.decode(raw, role)
                call.response = method(call.request, context, **kwargs)
        except (RpcFailure, AuthFailure, Overloaded) as failure:
            call.fail(failure)
        except Exception:
            call.internal()
        call.finish()
        return call.response

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=None, response_serializer=response_type.SerializeToString
    )


def _stream_handler(service: RouterService, method_name: str, request_type, response_type, guard: CallGuard):
    """A server-streaming method (``CompleteStream``): the lane slot is held until the stream ends;
    the last event's ``result`` is what metrics and the access log see."""
    method = getattr(service, method_name)

    def handle(raw: bytes, context: grpc.ServicerContext):
        call = _Call(guard, method_name, request_type, context)
        try:
            role = guard.auth.check(method_name, call.metadata)
            with call.admit():
                kwargs = call.decode(raw, role)
                for event in method(call.request, context, **kwargs):
                    if event.HasField("result"):
                        call.response = event.result
                    yield event
        except GeneratorExit:  # the caller went away: nobody to answer
            call.code, call.message = grpc.StatusCode.CANCELLED, "the caller cancelled the stream"
            try:
                call.finish(abort=False)
            except Exception:  # noqa: BLE001 - the call is gone; only the record matters
                pass
            raise
        except (RpcFailure, AuthFailure, Overloaded) as failure:
            call.fail(failure)
        except Exception:
            call.internal()
        call.finish()

    return grpc.unary_stream_rpc_method_handler(
        handle, request_deserializer=None, response_serializer=response_type.SerializeToString
    )


def _record(guard: CallGuard, method_name: str, code: grpc.StatusCode, seconds: float, request_id: str,
            request, response, context, *, key: str | None = None, extra: tuple = ()) -> None:
    """Metrics and the access-log line of one call (never raises)."""
    try:
        is_route = method_name == "Route"
        is_complete = method_name in COMPLETE_METHODS
        mode = _mode_label(request, guard.default_mode) if (is_route or is_complete) and request is not None else None
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
        if is_route or is_complete:
            record["mode"] = mode
            if is_route and response is not None:
                record.update(
                    router=response.router,
                    knob=response.knob,
                    model=response.model_id,
                    action=ACTION_NAMES.get(response.action, "unspecified"),
                    est_cost_usd=response.est_cost_usd,
                    registry_version=response.registry_version,
                )
            if is_complete:
                record["key"] = key
                record["stop"] = dict(extra).get(STOP_METADATA_KEY)
                if response is not None:
                    record.update(
                        router=response.router,
                        knob=response.knob,
                        model=response.model_id,
                        stop=STOP_NAMES.get(response.stop, "unspecified"),
                        attempts=[f"{a.model_id}:{ATTEMPT_STATUS_NAMES.get(a.status, '?')}" for a in response.attempts],
                        cost_usd=response.total_cost_usd,
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
    """One strict handler (unary, or server-streaming for ``CompleteStream``) per RPC of the ``Router`` service."""
    guard = guard or CallGuard()
    handlers = {}
    for method in SERVICE_DESCRIPTOR.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        make = _stream_handler if method.server_streaming else _unary_handler
        handlers[method.name] = make(service, method.name, request_type, response_type, guard)
    return handlers


def add_router_service(server: grpc.Server, service: RouterService, guard: CallGuard | None = None) -> None:
    """Register ``service`` on ``server`` under ``routerl.v1.Router``."""
    handlers = method_handlers(service, guard)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
