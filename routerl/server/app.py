"""Server lifecycle: open the registry, build the router, serve, shut down gracefully.

``RouterServer(config)`` opens the ``ModelStore`` (seeding a new database from the catalog),
loads the router, and on ``start()`` binds a gRPC server with the ``routerl.v1.Router`` service,
standard health checking (``grpc.health.v1.Health``: SERVING for ``""`` and
``routerl.v1.Router``) and server reflection. ``stop(grace)`` marks health NOT_SERVING, stops
accepting RPCs and lets those in flight finish for up to ``grace`` seconds.

``serve(config)`` is the blocking entry point of ``routerl serve``: it prints one line
``listening on HOST:PORT`` (the real port when ``port`` is 0) once the server accepts calls, and
shuts down gracefully on SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from concurrent import futures
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from routerl.descriptors.catalog import load_catalog
from routerl.routers.base import Router
from routerl.server.config import ServerConfig
from routerl.server.handlers import SERVICE_NAME, add_router_service
from routerl.server.router_loader import load_router
from routerl.server.service import RouterService
from routerl.server.store import ModelStore

log = logging.getLogger(__name__)


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"{host}:{port}"


def open_store(config: ServerConfig) -> ModelStore:
    """The registry at ``config.db``; a new database is seeded from the catalog."""
    catalog = config.catalog_path()
    if config.catalog and not catalog.exists():
        raise FileNotFoundError(f"catalog not found: {catalog}")

    def seed():
        if catalog is None:
            log.warning("no catalog to seed the new registry %s with; it starts empty", config.db)
            return []
        return load_catalog(catalog)

    store = ModelStore(config.db, seed)
    snap = store.snapshot()
    log.info("registry %s: %d models, version %d%s", config.db, len(snap), snap.version,
             f" (seeded from {catalog})" if store.seeded else "")
    return store


class RouterServer:
    """One gRPC server process's worth of state: registry, router, gRPC server, health."""

    def __init__(self, config: ServerConfig, *, router: Router | None = None, store: ModelStore | None = None):
        self.config = config
        self.store = store or open_store(config)
        try:
            self.router = router or load_router(
                config.router, config.router_options, data=config.data, splits=config.splits, checkpoint=config.checkpoint
            )
        except BaseException:
            if store is None:
                self.store.close()
            raise
        self.service = RouterService(self.store, self.router, config.request_limits)
        self.health = health.HealthServicer()
        self.port: int | None = None
        self._server: grpc.Server | None = None

    def start(self) -> int:
        """Bind and start serving; return the bound port."""
        cfg = self.config
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="routerl-rpc"),
            options=[
                ("grpc.max_receive_message_length", cfg.max_receive_bytes),
                ("grpc.max_send_message_length", cfg.max_send_bytes),
                ("grpc.so_reuseport", 0),  # a second server on the same port fails instead of sharing it
            ],
        )
        add_router_service(server, self.service)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
        )
        address = _address(cfg.host, cfg.port)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: {exc}") from None
        if not port:
            raise OSError(f"cannot listen on {address}")
        server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        self.port = port
        log.info("serving router %s with %d workers", self.router.name, cfg.workers)
        return port

    @property
    def address(self) -> str:
        return _address(self.config.host, self.port if self.port is not None else self.config.port)

    def stop(self, grace: float | None = None) -> threading.Event:
        """Stop accepting calls; calls in flight get ``grace`` seconds (default: the config's)."""
        grace = self.config.grace_s if grace is None else grace
        self.health.enter_graceful_shutdown()
        if self._server is None:
            done = threading.Event()
            done.set()
            return done
        return self._server.stop(grace)

    def wait(self) -> None:
        if self._server is not None:
            self._server.wait_for_termination()

    def close(self) -> None:
        self.store.close()


def serve(config: ServerConfig, *, announce: Callable[[str], None] | None = None) -> int:
    """Run a server until SIGTERM/SIGINT; return the exit code (0 after a graceful shutdown)."""
    server = RouterServer(config)
    stopping = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        if stopping.is_set():
            return
        stopping.set()
        log.info("%s: stopping (grace %.1fs)", signal.Signals(signum).name, config.grace_s)
        server.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        line = f"listening on {server.address}"
        if announce is not None:
            announce(line)
        else:
            print(line, flush=True)
        server.wait()
        log.info("stopped")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not stopping.is_set():
            server.stop(0)
        server.close()
        sys.stdout.flush()
