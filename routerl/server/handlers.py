"""Bind a ``RouterService`` to gRPC, decoding requests strictly.

The generated ``add_RouterServicer_to_server`` lets grpc decode requests, and a request that does
not parse (corrupt bytes, invalid UTF-8 in a string field) then fails with a generic INTERNAL
"Exception deserializing request!". Here each method receives the raw bytes and parses them
itself, so such a request gets INVALID_ARGUMENT naming the message type, and the server carries
on. ``RpcFailure`` becomes its status (the field at fault in the ``routerl-field`` trailing
metadata); any other exception is logged and answered INTERNAL.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.message import DecodeError

from routerl.server.proto import router_pb2 as pb
from routerl.server.convert import FIELD_METADATA_KEY
from routerl.server.service import RouterService, RpcFailure

log = logging.getLogger(__name__)

SERVICE_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["Router"]
SERVICE_NAME = SERVICE_DESCRIPTOR.full_name  # "routerl.v1.Router"


def _unary_handler(service: RouterService, method_name: str, request_type, response_type):
    method = getattr(service, method_name)

    def handle(raw: bytes, context: grpc.ServicerContext):
        try:
            try:
                request = request_type.FromString(raw)
            except DecodeError as exc:
                raise RpcFailure(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"request is not a valid {request_type.DESCRIPTOR.full_name} message: {exc}",
                ) from None
            return method(request, context)
        except RpcFailure as failure:
            if failure.field:
                context.set_trailing_metadata(((FIELD_METADATA_KEY, failure.field),))
            context.abort(failure.code, failure.message)
        except Exception:
            log.exception("%s/%s failed", SERVICE_NAME, method_name)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method_name} (see the server log)")

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=None, response_serializer=response_type.SerializeToString
    )


def method_handlers(service: RouterService) -> dict[str, grpc.RpcMethodHandler]:
    """One strict unary handler per RPC of the ``Router`` service."""
    handlers = {}
    for method in SERVICE_DESCRIPTOR.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        handlers[method.name] = _unary_handler(service, method.name, request_type, response_type)
    return handlers


def add_router_service(server: grpc.Server, service: RouterService) -> None:
    """Register ``service`` on ``server`` under ``routerl.v1.Router``."""
    handlers = method_handlers(service)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
