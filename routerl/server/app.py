"""Server lifecycle: build the router, open the registry, serve, shut down gracefully.

``RouterServer(config)`` loads the router, the tokens and the TLS files, then opens the
``ModelStore`` (seeding a new database from the catalog): a setting that fails leaves no new
database behind. On ``start()`` it binds a gRPC server with the ``routerl.v1.Router`` service,
standard health checking (``grpc.health.v1.Health``: SERVING for ``""`` and
``routerl.v1.Router``) and server reflection. ``stop(grace)`` marks health NOT_SERVING, stops
accepting RPCs and lets those in flight finish for up to ``grace`` seconds.

Around the service (``routerl.server.handlers``): bearer-token auth (``auth``), three bounded
lanes of calls (``admission``: Route, registry, Complete), micro-batching for routers with
``decide_batch`` (``batching``), Prometheus metrics on ``--metrics-port`` and a JSON access log
(``observe``); TLS when ``tls_cert``/``tls_key`` are set. ``Complete`` runs through one
``Completer`` (``complete``) built here: the server's router, the registry's models with
endpoints, one ``SpendLedger`` whose counters are in the server's metrics.

``serve(config)`` is the blocking entry point of ``routerl serve``: it prints one line
``listening on HOST:PORT`` (the real port when ``port`` is 0) once the server accepts calls (and
``metrics on HOST:PORT`` when metrics are on), and shuts down gracefully on SIGTERM or SIGINT.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from routerl.descriptors.catalog import load_catalog
from routerl.routers.base import Router
from routerl.server.admission import Lane
from routerl.server.auth import TokenAuth, read_token
from routerl.server.complete import Completer, LockedRouter
from routerl.server.config import ServerConfig
from routerl.server.handlers import SERVICE_NAME, CallGuard, add_router_service
from routerl.server.observe import ServerMetrics, configure_access_log
from routerl.server.router_loader import load_router
from routerl.server.service import RouterService
from routerl.server.store import ModelStore

log = logging.getLogger(__name__)


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"{host}:{port}"


def _seed_catalog(config: ServerConfig) -> Path | None:
    """The catalog a new registry is seeded from; ``FileNotFoundError`` when the one named is missing."""
    catalog = config.catalog_path()
    if config.catalog and not catalog.exists():
        raise FileNotFoundError(f"catalog not found: {catalog}")
    return catalog


def open_store(config: ServerConfig, catalog: Path | None) -> ModelStore:
    """The registry at ``config.db``; a new database is seeded from ``catalog`` (``_seed_catalog``)."""

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
        catalog = _seed_catalog(config) if store is None else None
        # Everything that may refuse a setting comes before the registry: a wrong router name,
        # option, token or TLS file must not leave a new registry file behind.
        self.router = router or load_router(
            config.router, config.router_options, data=config.data, splits=config.splits, checkpoint=config.checkpoint
        )
        self.auth = TokenAuth(
            read_token(config.auth_token_env, config.auth_token_file, what="routing token"),
            read_token(config.admin_token_env, config.admin_token_file, what="admin token"),
        )
        self.tls = _read_tls(config)
        self.store = store or open_store(config, catalog)
        self.metrics = ServerMetrics()
        self.metrics.watch_store(self.store)
        self.service = RouterService(
            self.store, self.router, config.request_limits,
            max_batch=config.max_batch, batch_wait_s=config.batch_wait_ms / 1000.0,
            response_limit_bytes=config.max_send_bytes, on_batch=self.metrics.batch_size.observe,
        )  # fmt: skip
        try:
            # Complete decides under the same router lock as Route (the router may not be thread-safe).
            self.completer = Completer(
                self.store, LockedRouter(self.router, self.service.router_lock), config.request_limits,
                config.complete_settings, prometheus_registry=self.metrics.registry, metrics=self.metrics,
            )  # fmt: skip
        except BaseException:
            self.service.close()
            if store is None:
                self.store.close()
            raise
        self.service.completer = self.completer
        # A router that is neither thread-safe nor batching decides one request at a time: more
        # Route calls "running" would only wait on its lock, beyond the queue's bounds.
        parallel = getattr(self.router, "thread_safe", False) or self.service.batcher is not None
        self.route_lane = Lane("route", config.workers if parallel else 1, config.max_queue, config.queue_timeout_s)
        self.registry_lane = Lane("registry", config.workers, config.max_queue, config.queue_timeout_s)
        # Complete calls spend most of their time waiting on providers, not on the router.
        self.complete_lane = Lane("complete", config.complete_workers, config.max_queue, config.queue_timeout_s)
        for lane in (self.route_lane, self.registry_lane, self.complete_lane):
            self.metrics.watch_lane(lane)
        self.guard = CallGuard(
            auth=self.auth, route_lane=self.route_lane, registry_lane=self.registry_lane,
            complete_lane=self.complete_lane, metrics=self.metrics,
            access_log=config.access_log != "off", log_queries=config.log_queries, default_mode=config.default_mode,
        )  # fmt: skip
        self.health = health.HealthServicer()
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._server: grpc.Server | None = None

    def start(self) -> int:
        """Bind and start serving; return the bound port."""
        cfg = self.config
        server = grpc.server(
            # One thread for every call that may run or wait at once: a call is refused with
            # RESOURCE_EXHAUSTED (by its lane, or by grpc past maximum_concurrent_rpcs) rather
            # than queued without bound in the executor.
            futures.ThreadPoolExecutor(max_workers=cfg.threads, thread_name_prefix="routerl-rpc"),
            options=[
                ("grpc.max_receive_message_length", cfg.max_receive_bytes),
                ("grpc.max_send_message_length", cfg.max_send_bytes),
                ("grpc.so_reuseport", 0),  # a second server on the same port fails instead of sharing it
            ],
            maximum_concurrent_rpcs=cfg.threads,
        )
        add_router_service(server, self.service, self.guard)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
        )
        address = _address(cfg.host, cfg.port)
        try:
            if self.tls is not None:
                port = server.add_secure_port(address, grpc.ssl_server_credentials([self.tls]))
            else:
                port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {address}: {exc}") from None
        if not port:
            raise OSError(f"cannot listen on {address}")
        if cfg.metrics_port:
            self.metrics_port = self.metrics.serve_http(cfg.metrics_host or cfg.host, cfg.metrics_port)
        server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        self.port = port
        if self.auth.enabled and self.tls is None and not _is_loopback(cfg.host):
            log.warning("auth tokens are on but TLS is off: tokens cross the network in clear text (use --tls-cert/--tls-key)")
        if not self.auth.enabled and not _is_loopback(cfg.host):
            log.warning("serving on %s without auth: anyone who can reach it may change the registry", cfg.host)
        log.info(
            "serving router %s: %d Route, %d registry and %d Complete calls at once, %d waiting per lane (wait <= %gs)%s%s%s%s",
            self.router.name, self.route_lane.concurrency, self.registry_lane.concurrency, self.complete_lane.concurrency,
            cfg.max_queue, cfg.queue_timeout_s,
            f", batches of <= {cfg.max_batch}" if self.service.batcher is not None else "",
            ", TLS" if self.tls is not None else "",
            ", token auth" if self.auth.enabled else "",
            f", metrics on port {self.metrics_port}" if self.metrics_port else "",
        )  # fmt: skip
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

    def calls_running(self) -> int:
        """Calls whose handler is still running, in every lane (after ``stop()``'s grace ran out,
        gRPC has cancelled them for their callers, but a router or provider call may go on)."""
        return sum(lane.snapshot()[0] for lane in (self.route_lane, self.registry_lane, self.complete_lane))

    def close(self) -> None:
        """Release everything (after ``stop()`` drained the calls): batcher, providers, metrics
        endpoint, registry."""
        self.service.close()
        self.metrics.close()
        self.store.close()


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def _read_tls(config: ServerConfig) -> tuple[bytes, bytes] | None:
    """(private key, certificate chain) PEM bytes, or ``None`` without TLS."""
    if not config.tls_cert:
        return None
    pair = []
    for what, path in (("TLS key", config.tls_key), ("TLS certificate", config.tls_cert)):
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"{what} not found: {path}") from None
        except OSError as exc:
            raise ValueError(f"{what} {path} cannot be read: {exc.strerror}") from None
        if b"-----BEGIN" not in data:
            raise ValueError(f"{what} {path} is not PEM")
        pair.append(data)
    _check_tls_pair(config.tls_cert, config.tls_key)
    return pair[0], pair[1]


def _check_tls_pair(cert: str, key: str) -> None:
    """``ValueError`` unless ``cert`` is a certificate and ``key`` its private key (grpc would
    only fail later, as "cannot listen on ...: Failed to bind", sending operators after a port)."""
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        reason = getattr(exc, "reason", None) or str(exc)
        raise ValueError(f"TLS certificate {cert} and key {key} do not make a pair ({reason}): "
                         "is the key the certificate's, and are --tls-cert and --tls-key the right way round?") from None


def serve(config: ServerConfig, *, announce: Callable[[str], None] | None = None) -> int:
    """Run a server until SIGTERM/SIGINT; return the exit code (0 after a graceful shutdown)."""
    restore_access_log = configure_access_log(config.access_log)
    # The main thread only loads the router: one OpenMP thread, so that it never starts a second
    # thread team beside the batch worker's (``PolicyRouter.start_worker`` has the measurement).
    # A router without a batch worker decides in the RPC threads: the default comes back for them.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    new_db = config.db != ":memory:" and not Path(config.db).exists()
    try:
        server = RouterServer(config)
    except BaseException:
        restore_access_log()
        torch.set_num_threads(threads)
        raise
    if server.service.batcher is None:
        torch.set_num_threads(threads)
    stopping = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        if stopping.is_set():  # a second signal: stop waiting for anything
            log.warning("%s again: exiting now", signal.Signals(signum).name)
            _exit_now(1)
        stopping.set()
        log.info("%s: stopping (grace %.1fs)", signal.Signals(signum).name, config.grace_s)
        server.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    forced = False
    try:
        try:
            server.start()
        except BaseException:
            if new_db:  # the port (or the metrics port) was refused: the registry this run made goes
                server.close()
                forced = None
                for suffix in ("", "-wal", "-shm"):
                    Path(config.db + suffix).unlink(missing_ok=True)
            raise
        if stopping.is_set():  # a signal came while it was starting: stop() had no server to stop
            server.stop()
        # The startup objects (model, tokenizer, probe index, registry: ~430k for the shipped
        # policy) live as long as the process: move them out of the collector's generations so a
        # full collection, which otherwise scans them all (0.25 s here), never stalls a request.
        gc.collect()
        gc.freeze()
        lines = [f"listening on {server.address}"]
        if server.metrics_port:
            lines.append(f"metrics on {_address(config.metrics_host or config.host, server.metrics_port)}")
        for line in lines:
            if announce is not None:
                announce(line)
            else:
                print(line, flush=True)
        server.wait()
        # Past the grace period gRPC cancels the calls still running for their callers, but their
        # handler threads go on (a router or provider call), and the interpreter would wait for
        # them at exit: the process would outlive its grace (and a supervisor's kill timeout).
        running = server.calls_running()
        if running:
            log.warning("%d call(s) still running after the %.1fs grace: exiting without them", running, config.grace_s)
            forced = True
        else:
            log.info("stopped")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not stopping.is_set():
            server.stop(0)
        if forced is False:  # (None: closed already, True: calls still running)
            server.close()
        restore_access_log()
        sys.stdout.flush()
        if forced:
            _exit_now(0)


def _exit_now(code: int) -> None:
    """End the process at once (threads still running are not waited for). Registry writes are
    committed before they are acknowledged, so nothing acknowledged is lost."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
