"""A small Python client for the routerl gRPC service.

    from routerl.client import RouterClient
    from routerl.descriptors import ModelDescriptor

    with RouterClient("localhost:50051", timeout=5.0) as client:
        result = client.route("What is 17 * 23?", mode="cost")
        print(result.model_id, result.ranking)
        client.register_model(ModelDescriptor(id="my-model", input_price_per_mtok=0.1,
                                              output_price_per_mtok=0.4,
                                              sample_scores={"math_grade_school": 0.9}))
        answer = client.complete("What is 17 * 23?", mode="cost", key_id="tenant-a", budget_usd=0.01)
        print(answer.answer, answer.model_id, answer.attempts, answer.total_cost_usd)

Models go in and out as ``routerl.descriptors.ModelDescriptor``; a failed call raises
``RouterClientError`` with the gRPC ``code``, the server's message, the ``request_id`` the server
logged it under and, for INVALID_ARGUMENT, the ``field`` at fault.

A server with auth wants a token (``token=`` or ``token_env="ROUTERL_TOKEN"``; sent as the
``authorization: Bearer`` metadata of every call); a server with TLS wants ``tls_ca="ca.pem"``
(or ``tls=True`` to trust the system's roots).
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

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
DEFAULT_COMPLETE_TIMEOUT = 120.0  # Complete calls models: they take seconds, not milliseconds
KEY_METADATA_KEY = "routerl-key-id"
STOP_METADATA_KEY = "routerl-stop"


REQUEST_ID_METADATA_KEY = "routerl-request-id"
MAX_TIMEOUT_S = 1e9  # gRPC's deadline overflows past about 9.2e9 s: every call would then fail at once
_UINT32_MAX = 2**32 - 1


def _check_timeout(value, name: str = "timeout") -> float | None:
    """``value`` when it is None (no deadline) or a finite number of seconds in (0, ``MAX_TIMEOUT_S``]."""
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value)
            or not 0 < value <= MAX_TIMEOUT_S):
        raise ValueError(f"{name} must be a number of seconds greater than 0 and at most {MAX_TIMEOUT_S:g} "
                         f"(None: no deadline), got {value!r}")
    return value


def _count(name: str, value, maximum: int | None = _UINT32_MAX) -> int:
    """``value`` as an int, or a ValueError naming ``name`` (a bool, a float, out of range)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0 or (maximum is not None
                                                                                          and value > maximum):
        limit = f" from 0 to {maximum}" if maximum is not None else " >= 0"
        raise ValueError(f"{name} must be a whole number{limit}, got {value!r}")
    return int(value)


def _number(name: str, value) -> float:
    """``value`` as a float, or a ValueError naming ``name`` (a bool, a string, ...); the server checks the range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _ids(name: str, values: Iterable[str]) -> list[str]:
    """A list of model ids; a single string is refused (it would be split into characters)."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} takes a list of model ids, got the string {values!r} (write [{values!r}])")
    return list(values)


class RouterClientError(Exception):
    """A failed call: ``code`` (a ``grpc.StatusCode``), ``details``, the ``field`` at fault and the
    server's ``request_id`` for the call (to find it in the server's access log); for
    ``complete()``, ``stop`` says why no answer came (``no_endpoint``, ``budget``, ``refused``,
    ``failed``, ...)."""

    def __init__(self, code: grpc.StatusCode, details: str, field: str | None = None, request_id: str | None = None,
                 stop: str | None = None):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.field = field
        self.request_id = request_id
        self.stop = stop

    @classmethod
    def from_rpc_error(cls, exc: grpc.RpcError) -> "RouterClientError":
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
        fld = request_id = stop = None
        if hasattr(exc, "trailing_metadata"):
            for key, value in exc.trailing_metadata() or ():
                if key == FIELD_METADATA_KEY:
                    fld = value
                elif key == REQUEST_ID_METADATA_KEY:
                    request_id = value
                elif key == STOP_METADATA_KEY:
                    stop = value
        return cls(code, details, fld, request_id, stop)


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


_ATTEMPT_STATUS = {pb.ATTEMPT_STATUS_OK: "ok", pb.ATTEMPT_STATUS_FAILED: "failed", pb.ATTEMPT_STATUS_SKIPPED: "skipped"}
_STOP = {
    pb.STOP_ACCEPTED: "accepted", pb.STOP_MAX_ROUNDS: "max_rounds", pb.STOP_BUDGET: "budget", pb.STOP_FAILED: "failed",
    pb.STOP_REFUSED: "refused", pb.STOP_DEADLINE: "deadline", pb.STOP_CANCELLED: "cancelled",
}


@dataclass
class CompleteAttempt:
    """One model considered by ``complete()``: ``status`` ok / failed / skipped with a ``reason``."""

    round: int
    model_id: str
    status: str
    reason: str = ""
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    fallback: bool = False
    think: str = ""
    response: str = ""

    @classmethod
    def from_proto(cls, msg: pb.ModelAttempt) -> "CompleteAttempt":
        return cls(msg.round, msg.model_id, _ATTEMPT_STATUS.get(msg.status, "unspecified"), msg.reason, msg.latency_ms,
                   msg.prompt_tokens, msg.completion_tokens, msg.cost_usd, msg.fallback, msg.think, msg.response)

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class CompleteResult:
    """The answer of ``complete()``: the final ``answer`` and the ``model_id`` that gave it,
    every model considered (``attempts``), the spend, and why the request stopped."""

    answer: str
    model_id: str
    attempts: list[CompleteAttempt] = field(default_factory=list)
    total_cost_usd: float = 0.0
    think: str = ""
    request_id: str = ""
    router: str = ""
    stop: str = ""
    message: str = ""
    key_id: str = ""
    registry_version: int = 0
    knob: float = 0.0
    fallback: bool = False

    @classmethod
    def from_proto(cls, msg: pb.CompleteResponse) -> "CompleteResult":
        return cls(
            answer=msg.answer, model_id=msg.model_id, attempts=[CompleteAttempt.from_proto(a) for a in msg.attempts],
            total_cost_usd=msg.total_cost_usd, think=msg.think, request_id=msg.request_id, router=msg.router,
            stop=_STOP.get(msg.stop, "unspecified"), message=msg.message, key_id=msg.key_id,
            registry_version=msg.registry_version, knob=msg.knob, fallback=msg.fallback,
        )  # fmt: skip

    def to_dict(self) -> dict:
        out = dict(vars(self))
        out["attempts"] = [a.to_dict() for a in self.attempts]
        return out


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
        allow=_ids("allow", allow),
        deny=_ids("deny", deny),
        think_budget=_count("think_budget", think_budget),
        domain=domain or "",
        prompt_tokens=_count("prompt_tokens", prompt_tokens or 0),
        request_id=request_id or "",
    )
    if knob is not None:
        req.knob = _number("knob", knob)
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
        for name, value in limits.items():
            if value is not None and name == "min_context_window":
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):  # the server checks the range
                    raise ValueError(f"min_context_window must be a whole number, got {value!r}")
                limits[name] = int(value)
            elif value is not None:
                limits[name] = _number(name, value)
        req.limits.CopyFrom(pb.Limits(**{k: v for k, v in limits.items() if v is not None}))
    for att in attempts:
        if not isinstance(att, Attempt):
            att = Attempt(*att)
        req.attempts.add(model_id=att.model_id, response=att.response, cost_usd=att.cost_usd)
    return req


def build_complete_request(
    query: str,
    *,
    max_rounds: int | None = None,
    budget_usd: float | None = None,
    key_id: str | None = None,
    **options,
) -> pb.CompleteRequest:
    """The ``CompleteRequest`` for these arguments: ``options`` are those of
    ``build_route_request`` that apply (mode or knob, allow, deny, limits, domain, prompt_tokens,
    request_id); ``max_rounds``/``budget_usd`` lower the server's limits for this request."""
    for name in ("think_budget", "attempts"):
        if options.get(name):
            raise ValueError(f"complete() takes no {name!r}: the server runs the rounds itself")
        options.pop(name, None)
    route = build_route_request(query, **options)
    req = pb.CompleteRequest(query=route.query, allow=route.allow, deny=route.deny, domain=route.domain,
                             prompt_tokens=route.prompt_tokens, request_id=route.request_id,
                             max_rounds=_count("max_rounds", max_rounds or 0), key_id=key_id or "")
    which = route.WhichOneof("cost")
    if which == "knob":
        req.knob = route.knob
    elif which == "mode":
        req.mode = route.mode
    if route.HasField("limits"):
        req.limits.CopyFrom(route.limits)
    if budget_usd is not None:
        req.budget_usd = _number("budget_usd", budget_usd)
    return req


def read_client_token(token_env: str | None) -> str | None:
    """The token in environment variable ``token_env`` (``None`` when no name is given or it is unset)."""
    if not token_env:
        return None
    value = os.environ.get(token_env, "").strip()
    return value or None


class RouterClient:
    """Calls a routerl server at ``target`` (``host:port``); ``timeout`` is each call's deadline in
    seconds (``None``: no deadline; a finite number up to ``MAX_TIMEOUT_S``, as is each method's
    ``timeout=``). Use as a context manager or call ``close()``.

    ``token`` (or the environment variable named by ``token_env``): the bearer token sent with
    every call. ``tls_ca``: a PEM file of the CA that signed the server's certificate (TLS on);
    ``tls=True``: TLS with the system's trusted roots; ``tls_server_name``: the name to verify the
    certificate against when it differs from the target's host.
    """

    def __init__(self, target: str = DEFAULT_TARGET, timeout: float | None = 10.0, *, max_message_bytes: int | None = None,
                 channel: grpc.Channel | None = None, token: str | None = None, token_env: str | None = None,
                 tls: bool = False, tls_ca: str | os.PathLike | None = None, tls_server_name: str | None = None):
        _check_timeout(timeout)
        self.target = target
        self.timeout = timeout
        token = token if token is not None else read_client_token(token_env)
        if token is not None and (not token or any(ch.isspace() for ch in token) or not token.isascii()):
            raise ValueError("token must be printable ASCII without spaces")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        options = []
        if max_message_bytes:
            options = [("grpc.max_send_message_length", max_message_bytes), ("grpc.max_receive_message_length", max_message_bytes)]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        self._own_channel = channel is None
        if channel is None:
            if tls or tls_ca:
                root = None
                if tls_ca:
                    try:
                        root = Path(tls_ca).read_bytes()
                    except FileNotFoundError:
                        raise FileNotFoundError(f"TLS CA file not found: {tls_ca}") from None
                channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root), options=options)
            else:
                channel = grpc.insecure_channel(target, options=options)
        self.channel = channel
        self._stub = pb_grpc.RouterStub(self.channel)

    def _call(self, method: str, request, timeout: float | None = None):
        _check_timeout(timeout)
        try:
            return getattr(self._stub, method)(
                request, timeout=timeout if timeout is not None else self.timeout, metadata=self._metadata
            )
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

    def _complete_call(self, timeout: float | None) -> tuple[float | None, tuple | None]:
        if timeout is None:
            timeout = max(self.timeout, DEFAULT_COMPLETE_TIMEOUT) if self.timeout is not None else None
        _check_timeout(timeout)
        return timeout, self._metadata

    def complete(self, query: str, *, timeout: float | None = None, **options) -> CompleteResult:
        """Answer ``query`` with the server's models (``Complete``): routed, called through their
        endpoints, escalated or accepted, with fallbacks. ``options``: those of
        ``build_complete_request`` (mode or knob, allow, deny, limits, domain, prompt_tokens,
        request_id, max_rounds, budget_usd, key_id). ``timeout``: the call's deadline (default:
        the client's, at least 120 s). Raises ``RouterClientError`` (``.stop`` says why no
        answer came)."""
        timeout, metadata = self._complete_call(timeout)
        try:
            resp = self._stub.Complete(build_complete_request(query, **options), timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            raise RouterClientError.from_rpc_error(exc) from None
        return CompleteResult.from_proto(resp)

    def complete_stream(self, query: str, *, timeout: float | None = None,
                        **options) -> Iterator[CompleteAttempt | CompleteResult]:
        """``complete()`` streamed (``CompleteStream``): each ``CompleteAttempt`` as the server
        makes it, then the ``CompleteResult``. A failure raises ``RouterClientError`` after the
        attempts that came before it."""
        timeout, metadata = self._complete_call(timeout)
        call = self._stub.CompleteStream(build_complete_request(query, **options), timeout=timeout, metadata=metadata)
        try:
            for event in call:
                if event.HasField("attempt"):
                    yield CompleteAttempt.from_proto(event.attempt)
                elif event.HasField("result"):
                    yield CompleteResult.from_proto(event.result)
        except grpc.RpcError as exc:
            raise RouterClientError.from_rpc_error(exc) from None
        finally:
            call.cancel()  # a no-op once the stream ended; stops the server when the caller stops early

    # -- registry ------------------------------------------------------------------------------
    def register_model(self, model: ModelDescriptor) -> ModelDescriptor:
        """Register ``model``; returns the stored descriptor."""
        resp = self._call("RegisterModel", pb.RegisterModelRequest(model=descriptor_to_proto(model)))
        stored = descriptor_from_proto(resp.model)
        if resp.probe_results_omitted:  # too large to echo; the server stored what was sent
            stored = stored.with_changes(probe_results=dict(model.probe_results))
        return stored

    def update_model(self, model: ModelDescriptor, fields: Iterable[str] | None = None, etag: str = "") -> ModelDescriptor:
        """Replace ``model.id``'s descriptor with ``model``, or only ``fields`` of it; returns the
        stored descriptor (without ``probe_results`` when they were too large to echo and not sent).
        With ``etag`` (from ``read_model``), the update applies only if the model has not changed
        since that read: else ``RouterClientError`` with code ``ABORTED`` and nothing is written."""
        req = pb.UpdateModelRequest(model=descriptor_to_proto(model), etag=etag)
        if isinstance(fields, str):
            raise ValueError(f"fields takes a list of field names, got the string {fields!r} (write [{fields!r}])")
        for name in fields or ():
            if name not in UPDATABLE_FIELDS:
                raise ValueError(f"cannot update field {name!r}; updatable: {', '.join(UPDATABLE_FIELDS)}")
            req.update_mask.paths.append(name)
        resp = self._call("UpdateModel", req)
        stored = descriptor_from_proto(resp.model)
        if resp.probe_results_omitted and (not req.update_mask.paths or "probe_results" in req.update_mask.paths):
            stored = stored.with_changes(probe_results=dict(model.probe_results))
        return stored

    def remove_model(self, model_id: str) -> int:
        """Remove a model; returns the new registry version."""
        return self._call("RemoveModel", pb.RemoveModelRequest(id=model_id)).registry_version

    def get_model(self, model_id: str) -> ModelDescriptor:
        return descriptor_from_proto(self._call("GetModel", pb.GetModelRequest(id=model_id)).model)

    def read_model(self, model_id: str) -> tuple[ModelDescriptor, str]:
        """The descriptor and its etag, for a read-modify-write: ``update_model(..., etag=etag)``
        then fails (``ABORTED``) instead of undoing a change someone made in between."""
        resp = self._call("GetModel", pb.GetModelRequest(id=model_id))
        return descriptor_from_proto(resp.model), resp.etag

    def list_models(self, *, omit_probe_results: bool = False, page_size: int = 0) -> list[ModelDescriptor]:
        """Every registered model, following the server's pages. A model too large for one
        response comes without ``probe_results`` (``get_model`` cannot do better); so does every
        model with ``omit_probe_results``."""
        _count("page_size", page_size)
        models: list[ModelDescriptor] = []
        token = ""
        for _ in range(1_000_000):
            page = self._call("ListModels", pb.ListModelsRequest(page_size=page_size, page_token=token,
                                                                 omit_probe_results=omit_probe_results))
            models.extend(descriptor_from_proto(m) for m in page.models)
            token = page.next_page_token
            if not token:
                break
        return models

    def list_models_page(self, page_size: int = 0, page_token: str = "", *, omit_probe_results: bool = False) -> pb.ListModelsResponse:
        """One page of ``ListModels`` as the raw response (``next_page_token``, ``probe_results_omitted``)."""
        _count("page_size", page_size)
        return self._call("ListModels", pb.ListModelsRequest(page_size=page_size, page_token=page_token,
                                                             omit_probe_results=omit_probe_results))

    def registry_version(self) -> int:
        return self._call("ListModels", pb.ListModelsRequest(page_size=1, omit_probe_results=True)).registry_version

    # -- health --------------------------------------------------------------------------------
    def health(self, service: str = "") -> str:
        """The server's health status name (``SERVING``, ``NOT_SERVING``, ...)."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout, metadata=self._metadata)
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
