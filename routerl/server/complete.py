"""The ``Complete`` and ``CompleteStream`` RPCs: answer a query with the registered models.

``Completer`` joins the service to ``routerl.live``: one ``Executor`` built at start-up over the
server's router (behind the service's router lock, so a router that is not thread-safe still
decides one request at a time), a ``ProviderPool`` that builds each model's provider from its
registered ``endpoint`` when first called, and one ``SpendLedger`` whose counters live in the
server's Prometheus registry. Each request takes the registry's *current* models (a model
registered or re-priced is used by the next request), applies the request's filters as ``Route``
does, keeps the candidates that have an endpoint, and runs the executor.

Status mapping (``RpcFailure``; the trailing metadata ``routerl-stop`` names the case):

* an answer: OK, whatever stopped the request (``stop`` says what; a fallback or a budget that
  blocked an escalation is in ``attempts``);
* no candidate left after the filters: FAILED_PRECONDITION (as ``Route``); none of them has an
  endpoint: FAILED_PRECONDITION (``no_endpoint``);
* no candidate's estimated cost fits the budget (``budget``), or the caller key's budget is spent
  and the policy is ``refuse`` (``refused``): FAILED_PRECONDITION. Not RESOURCE_EXHAUSTED: this
  server answers that for overload, which callers should retry after a backoff, while a spent
  budget stays spent until an operator raises it; FAILED_PRECONDITION says "do not retry as is";
* every provider called failed (``failed``): UNAVAILABLE, the attempts in the message;
* the request's time ran out before any answer (``deadline``): DEADLINE_EXCEEDED; the caller went
  away (``cancelled``): CANCELLED.

The caller's key (what spend is accounted to and whose budget applies) is resolved by
``resolve_key``: the ``routerl-key-id`` request metadata, else the request's ``key_id``, else the
caller's token role on a server with tokens, else ``anonymous``.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import grpc

from routerl.live.accounting import ANONYMOUS, SpendLedger
from routerl.live.executor import KEY_BUDGET_POLICIES, CallRecord, CompletionResult, Executor
from routerl.live.provider import RetryPolicy
from routerl.routers.base import Router
from routerl.server.proto import router_pb2 as pb
from routerl.server.requests import EmptyPoolError, RequestError, RequestLimits, candidate_pool, parse_route_request

log = logging.getLogger(__name__)

KEY_METADATA_KEY = "routerl-key-id"  # the caller's key id, set by the caller or a gateway in front
STOP_METADATA_KEY = "routerl-stop"  # on an error answer: why no answer came
KEY_ID_RE = re.compile(r"[A-Za-z0-9._:@/+-]{1,64}")
MAX_ERROR_CHARS = 2_000
_DEADLINE_MARGIN_S = 0.05  # leave this much of the caller's deadline for the answer to travel

STOP_VALUES = {
    "accepted": pb.STOP_ACCEPTED,
    "max_rounds": pb.STOP_MAX_ROUNDS,
    "budget": pb.STOP_BUDGET,
    "failed": pb.STOP_FAILED,
    "refused": pb.STOP_REFUSED,
    "deadline": pb.STOP_DEADLINE,
    "cancelled": pb.STOP_CANCELLED,
}
STOP_NAMES = {value: name for name, value in STOP_VALUES.items()}
ATTEMPT_STATUS_VALUES = {"ok": pb.ATTEMPT_STATUS_OK, "failed": pb.ATTEMPT_STATUS_FAILED, "skipped": pb.ATTEMPT_STATUS_SKIPPED}
ATTEMPT_STATUS_NAMES = {value: name for name, value in ATTEMPT_STATUS_VALUES.items()}


class CompleteFailure(Exception):
    """A Complete request that ends without an answer: its status, message and ``stop`` name."""

    def __init__(self, code: grpc.StatusCode, message: str, stop: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.stop = stop
        self.field = field


def _metadata_value(metadata, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key:
            return v if isinstance(v, str) else None
    return None


def resolve_key(metadata, key_id: str, role: str | None) -> str:
    """The caller's key: ``routerl-key-id`` metadata, else ``key_id``, else the token role, else
    ``anonymous``. ``RequestError`` when the one given is malformed."""
    for name, value in (("metadata routerl-key-id", _metadata_value(metadata, KEY_METADATA_KEY)), ("key_id", key_id)):
        if value:
            if not KEY_ID_RE.fullmatch(value):
                raise RequestError(name if name == "key_id" else KEY_METADATA_KEY,
                                   "must be 1 to 64 letters, digits or ._:@/+- characters")
            return value
    return role or ANONYMOUS


@dataclass(frozen=True)
class CompleteSettings:
    """What the server's ``Complete`` may do (``ServerConfig``'s ``complete_*``, ``provider_*``
    and ``key_budget*`` fields)."""

    max_rounds: int = 2
    budget_usd: float | None = None
    timeout_s: float = 120.0
    provider_timeout_s: float = 60.0
    provider_retries: int = 3
    provider_backoff_s: float = 0.5
    provider_max_tokens: int | None = None
    key_budget_usd: float | None = None
    key_budgets: Mapping[str, float] = field(default_factory=dict)
    key_budget_policy: str = "cheapest"
    key_budget_min_score: float = 0.0

    def __post_init__(self) -> None:
        if self.key_budget_policy not in KEY_BUDGET_POLICIES:
            raise ValueError(f"field 'key_budget_policy': must be one of {', '.join(KEY_BUDGET_POLICIES)}, got {self.key_budget_policy!r}")
        for key in self.key_budgets:
            if not isinstance(key, str) or not KEY_ID_RE.fullmatch(key):
                raise ValueError(f"field 'key_budgets': {key!r} is not a key id (1 to 64 letters, digits or ._:@/+-)")


class LockedRouter(Router):
    """A router called under a lock (the service's), for routers that are not thread-safe."""

    def __init__(self, router: Router, lock):
        self.inner = router
        self.name = router.name
        self.max_rounds = getattr(router, "max_rounds", 1)
        self.thread_safe = True
        self._lock = lock

    def decide(self, query, candidates, knob, attempts=()):
        with self._lock:
            return self.inner.decide(query, candidates, knob, attempts)


@dataclass
class _Prepared:
    params: Any
    candidates: list
    version: int
    key: str
    max_rounds: int | None
    budget_usd: float | None
    timeout_s: float | None


class Completer:
    """Runs ``Complete`` requests (see the module docstring)."""

    def __init__(self, store, router: Router, limits: RequestLimits, settings: CompleteSettings | None = None, *,
                 prometheus_registry=None, metrics=None):
        self.store = store
        self.router = router
        self.limits = limits
        self.settings = settings = settings or CompleteSettings()
        self.metrics = metrics
        self.ledger = SpendLedger(budgets=dict(settings.key_budgets), default_budget_usd=settings.key_budget_usd,
                                  prometheus_registry=prometheus_registry)
        provider_options: dict[str, Any] = {
            "timeout_s": settings.provider_timeout_s,
            "retry": RetryPolicy(attempts=settings.provider_retries, base_delay_s=settings.provider_backoff_s),
        }
        if settings.provider_max_tokens:
            provider_options["max_tokens"] = settings.provider_max_tokens
        callable_now = [m for m in store.snapshot().models if m.endpoint is not None]
        self.executor = Executor.from_descriptors(
            router, callable_now, provider_options=provider_options, max_rounds=settings.max_rounds,
            budget_usd=settings.budget_usd, timeout_s=settings.timeout_s, ledger=self.ledger,
            key_budget_policy=settings.key_budget_policy, min_acceptable_score=settings.key_budget_min_score,
        )  # fmt: skip

    def close(self) -> None:
        self.executor.providers.close()

    # -- requests ------------------------------------------------------------------------------
    def prepare(self, request: pb.CompleteRequest, context, key: str) -> _Prepared:
        """Validate the request and pick its candidates (``RequestError``, ``CompleteFailure``)."""
        route = pb.RouteRequest(query=request.query, allow=request.allow, deny=request.deny, domain=request.domain,
                                prompt_tokens=request.prompt_tokens, request_id=request.request_id)
        which = request.WhichOneof("cost")
        if which == "knob":
            route.knob = request.knob
        elif which == "mode":
            route.mode = request.mode
        if request.HasField("limits"):
            route.limits.CopyFrom(request.limits)
        params = parse_route_request(route, self.limits)
        budget = None
        if request.HasField("budget_usd"):
            budget = request.budget_usd
            if not math.isfinite(budget) or budget < 0:
                raise RequestError("budget_usd", f"must be a finite number >= 0, got {budget}")
        snapshot = self.store.snapshot()
        try:
            pool = candidate_pool(snapshot.models, params)
        except EmptyPoolError as exc:
            raise CompleteFailure(grpc.StatusCode.FAILED_PRECONDITION, str(exc), "no_candidate") from None
        callable_pool = [m for m in pool if m.endpoint is not None]
        if not callable_pool:
            shown = ", ".join(m.id for m in pool[:10]) + (", ..." if len(pool) > 10 else "")
            raise CompleteFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no candidate has an endpoint to call ({len(pool)} left after filters: {shown}); "
                "register models with endpoints (routerl probe --register, routerl models add --base-url ...)",
                "no_endpoint",
            )
        remaining = context.time_remaining() if context is not None else None
        timeout = None if remaining is None else max(0.0, remaining - _DEADLINE_MARGIN_S)
        return _Prepared(params, callable_pool, snapshot.version, key, request.max_rounds or None, budget, timeout)

    def execute(self, prep: _Prepared, context, on_call=None) -> CompletionResult:
        cancelled = (lambda: not context.is_active()) if context is not None else None
        try:
            result = self.executor.complete(
                prep.params.query, prep.candidates, prep.params.knob, key=prep.key, max_rounds=prep.max_rounds,
                budget_usd=prep.budget_usd, timeout_s=prep.timeout_s, on_call=on_call, cancelled=cancelled,
            )  # fmt: skip
        except Exception as exc:
            log.exception("Complete failed on request %s", prep.params.request_id)
            raise CompleteFailure(grpc.StatusCode.INTERNAL, f"router {self.router.name!r} failed: {exc}", "error") from None
        if self.metrics is not None:
            self.metrics.observe_completion(result.stop)
        return result

    def respond(self, prep: _Prepared, result: CompletionResult) -> pb.CompleteResponse:
        """The response of a request that has an answer, else the ``CompleteFailure`` for it."""
        if not result.ok:
            raise _failure(result)
        return pb.CompleteResponse(
            answer=result.answer or "",
            model_id=result.final_model or "",
            attempts=[attempt_proto(c) for c in result.calls],
            total_cost_usd=result.total_cost_usd,
            think="\n".join(t for t in result.think if t),
            request_id=prep.params.request_id,
            router=self.router.name,
            stop=STOP_VALUES.get(result.stop, pb.STOP_UNSPECIFIED),
            message=result.message,
            key_id=prep.key,
            registry_version=prep.version,
            knob=prep.params.knob,
            fallback=result.fallback,
        )

    def complete(self, request: pb.CompleteRequest, context, key: str) -> pb.CompleteResponse:
        prep = self.prepare(request, context, key)
        return self.respond(prep, self.execute(prep, context))

    def stream(self, request: pb.CompleteRequest, context, key: str) -> Iterator[pb.CompleteEvent]:
        """Attempt events as they happen, then the result event (or a ``CompleteFailure``).

        The request runs on its own thread; the RPC thread relays its events. A caller that goes
        away stops the request before its next model call."""
        prep = self.prepare(request, context, key)
        events: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                events.put(("result", self.execute(prep, context, on_call=lambda call: events.put(("attempt", call)))))
            except BaseException as exc:  # noqa: BLE001 - handed to the RPC thread
                events.put(("error", exc))

        threading.Thread(target=work, name="routerl-complete", daemon=True).start()
        while True:
            kind, item = events.get()
            if kind == "attempt":
                yield pb.CompleteEvent(attempt=attempt_proto(item))
            elif kind == "result":
                yield pb.CompleteEvent(result=self.respond(prep, item))
                return
            else:
                raise item


def attempt_proto(call: CallRecord) -> pb.ModelAttempt:
    return pb.ModelAttempt(
        round=call.round,
        model_id=call.model_id,
        status=ATTEMPT_STATUS_VALUES.get(call.status, pb.ATTEMPT_STATUS_UNSPECIFIED),
        reason=call.reason,
        latency_ms=call.latency_ms,
        prompt_tokens=max(0, int(call.prompt_tokens)),
        completion_tokens=max(0, int(call.completion_tokens)),
        cost_usd=call.cost_usd,
        fallback=call.fallback,
        think=call.think,
        response=call.text,
    )


def _summary(result: CompletionResult) -> str:
    parts = []
    for c in result.calls:
        part = f"round {c.round} {c.model_id} {c.status}{' (fallback)' if c.fallback else ''}"
        parts.append(f"{part}: {c.reason}" if c.reason else part)
    text = "; ".join(parts) if parts else "no model was called"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _failure(result: CompletionResult) -> CompleteFailure:
    stop = result.stop
    detail = f"{result.message} [{_summary(result)}]"
    if stop in ("refused", "budget"):
        return CompleteFailure(grpc.StatusCode.FAILED_PRECONDITION, detail, stop)
    if stop == "deadline":
        return CompleteFailure(grpc.StatusCode.DEADLINE_EXCEEDED, detail, stop)
    if stop == "cancelled":
        return CompleteFailure(grpc.StatusCode.CANCELLED, detail, stop)
    return CompleteFailure(grpc.StatusCode.UNAVAILABLE, f"no provider answered: {detail}", stop)
