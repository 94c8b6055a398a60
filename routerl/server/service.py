"""The ``routerl.v1.Router`` service: what each RPC does and which status it answers.

``RouterService`` holds a ``ModelStore`` and a ``Router``. Each RPC method takes the decoded
request and the gRPC context, and returns the response message or raises ``RpcFailure``; the
binding in ``routerl.server.handlers`` turns a failure into the gRPC status (with the offending
field in the ``routerl-field`` trailing metadata).

Status codes: INVALID_ARGUMENT (a bad field, named; a model id longer than an id may be, or a new
endpoint no provider could be built from, is one), NOT_FOUND (an unknown model id),
ALREADY_EXISTS (a registered id), FAILED_PRECONDITION (no candidate left after the request's
filters), DEADLINE_EXCEEDED (the caller's deadline passed), INTERNAL (a router or storage fault;
nothing is half-written). ``Complete``/``CompleteStream`` are run by the ``Completer``
(``routerl.server.complete``, which documents their statuses); without one they answer
UNIMPLEMENTED.

Routers with ``decide_batch`` are called through a ``MicroBatcher`` (``routerl.server.batching``)
unless batching is off (``max_batch`` 1); the others per request. ``ListModels`` pages its answer
so that it stays under ``response_limit_bytes`` (the server's send limit), and a descriptor that
alone would exceed it is sent without its ``probe_results`` (named in ``probe_results_omitted``).
"""

from __future__ import annotations

import inspect
import logging
import sqlite3
import threading
from contextlib import nullcontext
from typing import Callable

import grpc

from routerl.descriptors.model import MAX_ID_LEN, DescriptorError
from routerl.routers.base import Router, RouteCall
from routerl.server.batching import BatchTimeout, MicroBatcher, has_batch_api
from routerl.server.complete import STOP_METADATA_KEY, CompleteFailure, Completer
from routerl.server.convert import (
    ACTION_VALUES,
    apply_update_mask,
    check_new_endpoint,
    descriptor_from_proto,
    descriptor_to_proto,
)
from routerl.server.proto import router_pb2 as pb
from routerl.server.requests import EmptyPoolError, RequestError, RequestLimits, candidate_pool, check_attempts, parse_route_request
from routerl.server.store import ModelChangedError, ModelExistsError, ModelNotFoundError, ModelStore, descriptor_etag

log = logging.getLogger(__name__)


class RpcFailure(Exception):
    """An RPC's error answer: a status code, a message and, for INVALID_ARGUMENT, the field;
    ``metadata``: more trailing metadata pairs (e.g. ``routerl-stop`` of a Complete call)."""

    def __init__(self, code: grpc.StatusCode, message: str, field: str | None = None, metadata: tuple = ()):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.metadata = tuple(metadata)


def _invalid(exc: RequestError | DescriptorError) -> RpcFailure:
    return RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)


def _require_id(name: str, value: str) -> str:
    """``value``, the model id a call names, when it is given and no longer than an id may be (a
    longer one is registered nowhere, and would be repeated whole in the NOT_FOUND message)."""
    if not value.strip():
        raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, f"field '{name}': is required", name)
    if len(value) > MAX_ID_LEN:
        raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT,
                         f"field '{name}': must be at most {MAX_ID_LEN} characters, got {len(value)}", name)
    return value


def _check_deadline(context, what: str) -> None:
    remaining = context.time_remaining() if context is not None else None
    if (remaining is not None and remaining <= 0) or (context is not None and not context.is_active()):
        raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded {what}")


class RouterService:
    """The RPC logic of ``routerl.v1.Router`` over a model store and a router."""

    def __init__(self, store: ModelStore, router: Router, limits: RequestLimits | None = None, *,
                 max_batch: int = 16, batch_wait_s: float = 0.002, response_limit_bytes: int = 4 * 1024 * 1024,
                 on_batch: Callable[[int], None] | None = None):
        self.store = store
        self.router = router
        self.limits = limits or RequestLimits()
        self.response_limit_bytes = response_limit_bytes
        # Routers that do not declare themselves thread-safe are called one request at a time.
        self._router_lock = nullcontext() if getattr(router, "thread_safe", False) else threading.Lock()
        self.completer: Completer | None = None  # set by the server: runs Complete/CompleteStream
        try:
            params = inspect.signature(router.decide).parameters
        except (TypeError, ValueError):
            params = {}
        self._passes_think_budget = "think_budget" in params
        self.batcher: MicroBatcher | None = None
        if max_batch > 1 and has_batch_api(router):
            self.batcher = MicroBatcher(router, max_batch=max_batch, max_wait_s=batch_wait_s,
                                        lock=self._router_lock, on_batch=on_batch)

    @property
    def router_lock(self):
        """The lock the router is called under (a no-op for thread-safe routers)."""
        return self._router_lock

    def close(self) -> None:
        """Stop the batcher (after deciding what it holds) and close the providers' connections."""
        if self.batcher is not None:
            self.batcher.close()
        if self.completer is not None:
            self.completer.close()

    # -- answering -----------------------------------------------------------------------------
    def _completer(self) -> Completer:
        if self.completer is None:
            raise RpcFailure(grpc.StatusCode.UNIMPLEMENTED, "Complete is not enabled on this server")
        return self.completer

    def Complete(self, request: pb.CompleteRequest, context, key: str = "anonymous") -> pb.CompleteResponse:
        completer = self._completer()
        try:
            return completer.complete(request, context, key)
        except RequestError as exc:
            raise _invalid(exc) from None
        except CompleteFailure as exc:
            raise _complete_failure(exc) from None

    def CompleteStream(self, request: pb.CompleteRequest, context, key: str = "anonymous"):
        """An iterator of ``CompleteEvent`` (the request is checked before the first one)."""
        completer = self._completer()
        try:
            events = completer.stream(request, context, key)
            first = next(events)
        except RequestError as exc:
            raise _invalid(exc) from None
        except CompleteFailure as exc:
            raise _complete_failure(exc) from None
        return _relay(first, events)

    # -- routing -------------------------------------------------------------------------------
    def Route(self, request: pb.RouteRequest, context) -> pb.RouteResponse:
        with self.batcher.expect() if self.batcher is not None else nullcontext() as slot:
            try:
                params = parse_route_request(request, self.limits)
            except RequestError as exc:
                raise _invalid(exc) from None
            snapshot = self.store.snapshot()
            try:
                check_attempts(snapshot.models, params)
            except RequestError as exc:
                raise _invalid(exc) from None
            try:
                pool = candidate_pool(snapshot.models, params)
            except EmptyPoolError as exc:
                raise RpcFailure(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
            _check_deadline(context, "before routing")
            kwargs = {"think_budget": params.think_budget} if self._passes_think_budget and params.think_budget else {}
            try:
                if slot is not None and not kwargs:
                    remaining = context.time_remaining() if context is not None else None
                    decision = slot.submit(RouteCall(params.query, tuple(pool), params.knob, params.attempts), remaining)
                else:
                    with self._router_lock:
                        decision = self.router.decide(params.query, pool, params.knob, params.attempts, **kwargs)
            except BatchTimeout:
                raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded while routing") from None
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
        except ModelChangedError as exc:
            raise RpcFailure(grpc.StatusCode.ABORTED, str(exc), "etag") from None
        except sqlite3.Error as exc:
            log.exception("registry write failed")
            raise RpcFailure(grpc.StatusCode.INTERNAL, f"registry write failed, nothing was changed: {exc}") from None

    def _descriptor(self, request, name: str = "model"):
        """The new model a request carries, validated (its endpoint too)."""
        if not request.HasField("model"):
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, f"field '{name}': is required", name)
        try:
            desc = descriptor_from_proto(request.model, prefix=name)
            check_new_endpoint(desc, prefix=name)
            return desc
        except DescriptorError as exc:
            raise _invalid(exc) from None

    def RegisterModel(self, request: pb.RegisterModelRequest, context) -> pb.RegisterModelResponse:
        desc = self._descriptor(request)
        version = self._write(lambda: self.store.add(desc), context)
        log.info("registered model %s (registry v%d)", desc.id, version)
        return self._fit(pb.RegisterModelResponse(model=descriptor_to_proto(desc), registry_version=version))

    def UpdateModel(self, request: pb.UpdateModelRequest, context) -> pb.UpdateModelResponse:
        if not request.HasField("model"):
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, "field 'model': is required", "model")
        model_id = _require_id("model.id", request.model.id)

        def change(current):
            desc = apply_update_mask(current, request.model, request.update_mask.paths, prefix="model")
            check_new_endpoint(desc, current, prefix="model")
            return desc

        # The mask is applied to the stored descriptor inside the write transaction: two updates of
        # different fields never undo each other; with an etag, nothing changed since the read.
        desc, version = self._write(lambda: self.store.modify(model_id, change, request.etag), context)
        log.info("updated model %s (registry v%d)", desc.id, version)
        return self._fit(pb.UpdateModelResponse(model=descriptor_to_proto(desc), registry_version=version,
                                                etag=descriptor_etag(desc)))

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
        return self._fit(pb.GetModelResponse(model=descriptor_to_proto(desc), registry_version=snapshot.version,
                                             etag=descriptor_etag(desc)))

    def _fit(self, response):
        """A one-model response, without ``model.probe_results`` when it would exceed the send limit."""
        if response.ByteSize() > self.response_limit_bytes - _RESPONSE_MARGIN:
            response.model.ClearField("probe_results")
            response.probe_results_omitted = True
        return response

    def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        snapshot = self.store.snapshot()
        after = _parse_page_token(request.page_token)
        page_size = request.page_size or len(snapshot.models)
        budget = self.response_limit_bytes - _RESPONSE_MARGIN
        response = pb.ListModelsResponse(registry_version=snapshot.version)
        used = response.ByteSize()
        last_seq = None
        for desc, seq in zip(snapshot.models, snapshot.seqs):
            if seq <= after:
                continue
            if len(response.models) >= page_size:
                response.next_page_token = _page_token(last_seq)
                break
            msg = descriptor_to_proto(desc)
            omitted = False
            if request.omit_probe_results and desc.probe_results:
                msg.ClearField("probe_results")
                omitted = True
            size = _entry_size(msg, 1) + (_entry_size(desc.id, 4) if omitted else 0)
            if used + size > budget and desc.probe_results and not omitted and not response.models:
                msg.ClearField("probe_results")  # alone too big for any page
                omitted = True
                size = _entry_size(msg, 1) + _entry_size(desc.id, 4)
            if used + size > budget and response.models:
                response.next_page_token = _page_token(last_seq)
                break
            if used + size > budget:
                log.error("model %s does not fit in a ListModels response even without probe_results", desc.id)
                raise RpcFailure(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 f"model {desc.id!r} does not fit under the response size limit ({self.response_limit_bytes} bytes)")
            response.models.append(msg)
            if omitted:
                response.probe_results_omitted.append(desc.id)
            used += size
            last_seq = seq
        return response


def _complete_failure(exc: CompleteFailure) -> RpcFailure:
    return RpcFailure(exc.code, exc.message, exc.field, metadata=((STOP_METADATA_KEY, exc.stop),))


def _relay(first, events):
    """Yield ``first`` and the rest of ``events``; a ``CompleteFailure`` becomes an ``RpcFailure``."""
    yield first
    try:
        yield from events
    except CompleteFailure as exc:
        raise _complete_failure(exc) from None


_RESPONSE_MARGIN = 512  # bytes kept free for the page token and the message's other fields
_PAGE_TOKEN_PREFIX = "after:"


def _varint_len(n: int) -> int:
    length = 1
    while n >= 0x80:
        n >>= 7
        length += 1
    return length


def _entry_size(value, field_number: int) -> int:
    """Bytes a repeated message or string field entry adds to its message."""
    n = value.ByteSize() if hasattr(value, "ByteSize") else len(value.encode("utf-8"))
    return _varint_len(field_number << 3) + _varint_len(n) + n


def _page_token(seq: int) -> str:
    return f"{_PAGE_TOKEN_PREFIX}{seq}"


def _parse_page_token(token: str) -> int:
    if not token:
        return 0
    digits = token[len(_PAGE_TOKEN_PREFIX):]
    if token.startswith(_PAGE_TOKEN_PREFIX) and 0 < len(digits) <= 18 and digits.isascii() and digits.isdigit():
        return int(digits)
    raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, "field 'page_token': not a token this server returned", "page_token")
