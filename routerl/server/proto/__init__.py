"""Generated protobuf/gRPC code for ``routerl.v1`` (do not edit ``router_pb2*``; regenerate with
``python -m routerl.server.codegen``)."""

from routerl.server.proto import router_pb2, router_pb2_grpc

__all__ = ["router_pb2", "router_pb2_grpc"]
