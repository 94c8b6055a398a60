"""Observability: Prometheus metrics, one JSON access-log line per call, request ids.

``ServerMetrics`` owns a private ``CollectorRegistry`` (several servers may live in one process)
and, with ``--metrics-port``, serves it over HTTP (``/metrics``) on its own port. Metrics:

* ``routerl_requests_total{method,code}`` and ``routerl_errors_total{method,code}`` (non-OK only);
* ``routerl_request_latency_seconds{method}``: every Router-service call, queue wait included;
* ``routerl_route_latency_seconds{router,mode}``: successful ``Route`` calls (mode: quality,
  balanced, cost, or knob when the request gave a knob);
* ``routerl_routes_total{model,action}``: where decisions went; ``routerl_estimated_spend_usd_total{model}``:
  the summed ``est_cost_usd`` of routed decisions;
* ``routerl_in_flight{lane}``, ``routerl_queue_depth{lane}``: calls running / waiting for a slot;
* ``routerl_route_batch_size``: requests per ``decide_batch`` call (batching routers only);
* ``routerl_registry_models``, ``routerl_registry_version``: read from the registry at scrape time;
* ``routerl_completions_total{stop}``: ``Complete``/``CompleteStream`` requests by how they ended
  (accepted, max_rounds, budget, failed, refused, deadline, cancelled);
* the spend ledger of ``Complete`` (``routerl.live.accounting``) registers its counters here too:
  ``routerl_model_calls_total{model,status}``, ``routerl_model_tokens_total{model,kind}``,
  ``routerl_model_spend_usd_total{model}``, ``routerl_key_spend_usd_total{key}``.

The access log (logger ``routerl.access``) gets one JSON object per call: ``ts``, ``request_id``,
``method``, ``status``, ``latency_ms``, ``peer``, and for ``Route`` the ``router``, ``mode``,
``knob``, ``model``, ``action``, ``est_cost_usd`` and ``registry_version`` (for registry calls the
``model`` id concerned; for ``Complete`` the ``key``, ``model`` that answered, ``stop``,
``attempts`` and ``cost_usd``). It never holds a token, nor the query text unless
``log_queries`` is on.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import uuid
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

access_log = logging.getLogger("routerl.access")

REQUEST_ID_METADATA_KEY = "x-request-id"  # the caller's id, when the message has no field for it
RESPONSE_ID_METADATA_KEY = "routerl-request-id"  # the id the server used, in trailing metadata
MAX_REQUEST_ID_LEN = 128

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid_request_id(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID_LEN and value.isascii() and value.isprintable()


def metadata_request_id(metadata) -> str | None:
    for key, value in metadata or ():
        if key == REQUEST_ID_METADATA_KEY and valid_request_id(value):
            return value
    return None


class ServerMetrics:
    """The server's Prometheus metrics (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("routerl_requests", "Router-service calls by method and status code",
                                ["method", "code"], registry=r)
        self.errors = Counter("routerl_errors", "Router-service calls that failed, by method and status code",
                              ["method", "code"], registry=r)
        self.latency = Histogram("routerl_request_latency_seconds", "Call latency by method (queue wait included)",
                                 ["method"], buckets=_LATENCY_BUCKETS, registry=r)
        self.route_latency = Histogram("routerl_route_latency_seconds", "Successful Route latency by router and mode",
                                       ["router", "mode"], buckets=_LATENCY_BUCKETS, registry=r)
        self.routes = Counter("routerl_routes", "Route decisions by chosen model and action", ["model", "action"], registry=r)
        self.spend = Counter("routerl_estimated_spend_usd", "Summed est_cost_usd of routed decisions, by model",
                             ["model"], registry=r)
        self.in_flight = Gauge("routerl_in_flight", "Calls running, by lane", ["lane"], registry=r)
        self.queue_depth = Gauge("routerl_queue_depth", "Calls waiting for a slot, by lane", ["lane"], registry=r)
        self.batch_size = Histogram("routerl_route_batch_size", "Route requests per decide_batch call",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.registry_models = Gauge("routerl_registry_models", "Models in the registry", registry=r)
        self.registry_version = Gauge("routerl_registry_version", "The registry version", registry=r)
        self.completions = Counter("routerl_completions", "Complete requests by how they ended", ["stop"], registry=r)
        self._http = None

    def watch_lane(self, lane) -> None:
        self.in_flight.labels(lane.name).set_function(lambda: lane.snapshot()[0])
        self.queue_depth.labels(lane.name).set_function(lambda: lane.snapshot()[1])

    def watch_store(self, store) -> None:
        self.registry_models.set_function(lambda: len(store.snapshot()))
        self.registry_version.set_function(lambda: store.snapshot().version)

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)
        if code != "OK":
            self.errors.labels(method, code).inc()

    def observe_route(self, router: str, mode: str, model: str, action: str, est_cost_usd: float, seconds: float) -> None:
        self.route_latency.labels(router, mode).observe(seconds)
        self.routes.labels(model, action).inc()
        if action == "route" and est_cost_usd > 0:
            self.spend.labels(model).inc(est_cost_usd)

    def observe_completion(self, stop: str) -> None:
        self.completions.labels(stop).inc()

    def render(self) -> bytes:
        """The metrics in the Prometheus text format (what ``/metrics`` serves)."""
        return generate_latest(self.registry)

    # -- HTTP endpoint ---------------------------------------------------------------------------
    def serve_http(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0: any free port); return the bound port."""
        from prometheus_client import start_http_server

        try:
            httpd, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        self._http = httpd
        return httpd.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def log_access(record: dict) -> None:
    """Emit one access-log line (a JSON object; keys with ``None`` values are dropped)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    line = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
    line.update((k, v) for k, v in record.items() if v is not None)
    access_log.info(json.dumps(line, ensure_ascii=False, separators=(",", ":")))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each line."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        import sys

        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_access_log(target: str):
    """Send the access log to stderr (``-``), a file (a path), or nowhere (``off``), one bare JSON
    line per call (the logger stops propagating to the root logger's formatted handlers).
    Returns a function that restores the previous setup."""
    saved = (list(access_log.handlers), access_log.level, access_log.propagate, access_log.disabled)
    for handler in saved[0]:
        access_log.removeHandler(handler)
    added = None
    if target == "off":
        access_log.disabled = True
    else:
        access_log.disabled = False
        # A file is reopened when it was moved or removed (logrotate without copytruncate).
        added = _StderrHandler() if target == "-" else logging.handlers.WatchedFileHandler(target, encoding="utf-8")
        added.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(added)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False

    def restore() -> None:
        if added is not None:
            access_log.removeHandler(added)
            added.close()
        for handler in saved[0]:
            access_log.addHandler(handler)
        access_log.setLevel(saved[1])
        access_log.propagate = saved[2]
        access_log.disabled = saved[3]

    return restore
