"""The execution engine: route a request, call the chosen model, escalate or accept, fall back.

    executor = Executor(router, providers, max_rounds=2, budget_usd=0.01, timeout_s=60)
    result = executor.complete("What is 17 * 23?", candidates, knob=0.1, key="tenant-a")
    result.answer, result.final_model, result.calls, result.think, result.fallback, result.stop

One request runs in rounds. Each round asks the router (``Router.decide``) with the attempts so
far; ``accept`` ends the request with the last answer; ``route`` names a model, which is called.
Its answer goes back to the router as an ``Attempt`` in the next round (the router may escalate
to another model, or accept). At most ``max_rounds`` rounds call a model; when they run out, the
last answer is final.

Fallback: when the chosen model fails (timeout, 429/5xx after retries, any provider error, no
endpoint), the next model of the decision's ``ranking`` is called in the same round, and so on;
a model that failed is not called again in this request, and a model that already answered is
not a fallback (the router may still choose it again explicitly).

Budgets: a call is never started when its estimated cost (``ModelDescriptor.estimate_cost_usd``)
exceeds what is left of the request's budget (``budget_usd``, lowered to what is left of the
caller key's budget); such a model is recorded as ``skipped`` with the numbers, and the next
model in the ranking is tried. The check is against the *estimate*: a call's real cost (from the
usage its provider reports) may exceed it, and is counted in full, so a request's spend can end
above its budget by at most one call's overrun. When nothing was called in a round because
every model left was over budget, the request stops with ``stop='budget'``; when a model within
the budget was called and failed, it is ``stop='failed'``. When a caller key's budget is
exhausted, ``key_budget_policy`` decides: ``refuse`` answers nothing (``stop='refused'``);
``cheapest`` skips the router and calls the cheapest acceptable model (overall probe score >=
``min_acceptable_score``), one round.

Every call is reported (``CallRecord``: model, round, status ok/failed/skipped with a reason,
latency, tokens, cost, whether it was a fallback) and counted in the ``SpendLedger``. A failed
call costs what its provider billed (an answer without content whose usage was reported), else 0.
A provider that raises something other than a ``ProviderError`` (a bug, a broken client) is a
failed call too (logged with its traceback): the request falls back.

Per request, ``complete()`` may lower the executor's settings (``max_rounds``, ``budget_usd``,
``timeout_s``: the lower of the two applies), pass ``on_call`` (called with each ``CallRecord``
as it is recorded: a server streams them) and ``cancelled`` (checked before each call: a caller
that went away stops the request, ``stop='cancelled'``).
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Literal, Mapping, Protocol, Sequence

from routerl.descriptors.model import ModelDescriptor
from routerl.live.accounting import SpendLedger
from routerl.live.errors import ProviderError, shorten
from routerl.live.pool import ProviderPool
from routerl.live.provider import ProviderAnswer
from routerl.routers.base import Attempt, Decision, Query, Router

log = logging.getLogger(__name__)

KEY_BUDGET_POLICIES = ("cheapest", "refuse")
Stop = Literal["accepted", "max_rounds", "budget", "failed", "refused", "deadline", "cancelled"]


class Provider(Protocol):
    """Anything that answers chat messages like ``ChatProvider``."""

    timeout_s: float

    def complete(self, messages, *, timeout_s: float | None = None) -> ProviderAnswer: ...


@dataclass(frozen=True)
class CallRecord:
    """One model considered in a request.

    ``status``: ``ok`` (answered), ``failed`` (called, no answer: ``reason`` says why, e.g.
    ``timeout: no answer within 2 s``) or ``skipped`` (not called: ``reason`` says why, e.g. the
    estimated cost exceeds the budget left). ``fallback``: the router had chosen another model.
    ``think``: the router's think text of this call's round.
    """

    round: int
    model_id: str
    status: Literal["ok", "failed", "skipped"]
    reason: str = ""
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    fallback: bool = False
    text: str = ""
    think: str = ""


@dataclass
class CompletionResult:
    """The outcome of one request.

    ``answer``/``final_model``: the final answer and who gave it (None when no call succeeded).
    ``calls``: every model considered, in order. ``think``: the router's think text per round.
    ``fallback``: some call fell back from the router's choice. ``stop``: why the request ended
    (``accepted``, ``max_rounds``, ``budget``, ``failed``, ``refused``, ``deadline``, ``cancelled``);
    ``message``: the same in words.
    """

    answer: str | None = None
    final_model: str | None = None
    calls: list[CallRecord] = field(default_factory=list)
    think: list[str] = field(default_factory=list)
    fallback: bool = False
    stop: Stop = "failed"
    message: str = ""
    key: str | None = None

    @property
    def ok(self) -> bool:
        return self.answer is not None

    @property
    def total_cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.calls)

    @property
    def rounds(self) -> int:
        return max((c.round for c in self.calls if c.status != "skipped"), default=0)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["ok"] = self.ok
        out["total_cost_usd"] = self.total_cost_usd
        return out


def _positive_or_none(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"field '{name}': must be a finite number >= 0, got {value!r}")
    return float(value)


class Executor:
    """Runs routed requests against live providers (see the module docstring).

    Args:
        router: any ``Router``.
        providers: model id -> provider, or a ``ProviderPool`` building them from the candidates'
            endpoints (a model without a provider fails over to the next in ranking).
        max_rounds: the most rounds that call a model (>= 1).
        budget_usd: per-request spend cap (None = no cap).
        timeout_s: per-request wall-clock limit (None = only the providers' own timeouts).
        ledger: spend counters and per-key budgets (a fresh unlimited one by default).
        key_budget_policy: ``cheapest`` or ``refuse``, when a key's budget is exhausted.
        min_acceptable_score: the overall probe score a model needs to be picked by ``cheapest``.
        system_prompt: an optional system message sent before the query.
    """

    def __init__(
        self,
        router: Router,
        providers: "Mapping[str, Provider] | ProviderPool",
        *,
        max_rounds: int = 2,
        budget_usd: float | None = None,
        timeout_s: float | None = None,
        ledger: SpendLedger | None = None,
        key_budget_policy: str = "cheapest",
        min_acceptable_score: float = 0.0,
        system_prompt: str | None = None,
    ):
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
            raise ValueError(f"field 'max_rounds': must be an integer >= 1, got {max_rounds!r}")
        if key_budget_policy not in KEY_BUDGET_POLICIES:
            raise ValueError(f"field 'key_budget_policy': must be one of {', '.join(KEY_BUDGET_POLICIES)}, got {key_budget_policy!r}")
        self.router = router
        self.providers = providers if isinstance(providers, ProviderPool) else dict(providers)
        self.max_rounds = max_rounds
        self.budget_usd = _positive_or_none("budget_usd", budget_usd)
        self.timeout_s = _positive_or_none("timeout_s", timeout_s)
        self.ledger = ledger if ledger is not None else SpendLedger()
        self.key_budget_policy = key_budget_policy
        self.min_acceptable_score = float(min_acceptable_score)
        self.system_prompt = system_prompt

    @classmethod
    def from_descriptors(
        cls, router: Router, descriptors: Sequence[ModelDescriptor] = (), *, provider_options: Mapping | None = None, **options
    ) -> "Executor":
        """An executor whose providers come from the candidates' endpoints through a
        ``ProviderPool`` (built at call time, so candidates registered later work too; models
        without an endpoint have none: choosing them falls back). ``descriptors`` are built now."""
        pool = ProviderPool(**dict(provider_options or {}))
        for desc in descriptors:  # build them now: a missing key is reported at start-up
            pool.get(desc)
        return cls(router, pool, **options)

    def provider_for(self, desc: ModelDescriptor) -> Provider | None:
        if isinstance(self.providers, ProviderPool):
            return self.providers.get(desc)
        return self.providers.get(desc.id)

    def lease(self, desc: ModelDescriptor) -> "AbstractContextManager[Provider | None]":
        """``provider_for(desc)`` held for a ``with`` block (a pool does not close it meanwhile)."""
        if isinstance(self.providers, ProviderPool):
            return self.providers.lease(desc)
        return nullcontext(self.providers.get(desc.id))

    # -- one request ---------------------------------------------------------------------------
    def complete(
        self,
        query: Query | str,
        candidates: Sequence[ModelDescriptor],
        knob: float,
        *,
        key: str | None = None,
        max_rounds: int | None = None,
        budget_usd: float | None = None,
        timeout_s: float | None = None,
        on_call: Callable[[CallRecord], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> CompletionResult:
        """Answer ``query`` with models from ``candidates`` (see the module docstring).

        ``max_rounds``, ``budget_usd`` and ``timeout_s`` lower the executor's own settings for
        this request (the lower value applies); ``on_call`` sees each ``CallRecord`` as it is
        recorded; ``cancelled`` returning True stops the request before its next call.
        """
        if isinstance(query, str):
            query = Query(text=query)
        if not candidates:
            raise ValueError("field 'candidates': no candidate models to route to")
        if max_rounds is not None and (isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1):
            raise ValueError(f"field 'max_rounds': must be an integer >= 1, got {max_rounds!r}")
        rounds = self.max_rounds if max_rounds is None else min(self.max_rounds, max_rounds)
        timeout = _lowest(self.timeout_s, _positive_or_none("timeout_s", timeout_s))
        request_budget = _lowest(self.budget_usd, _positive_or_none("budget_usd", budget_usd))

        def run(budget: float | None) -> _Run:
            return _Run(self, query, candidates, knob, key, budget, max_rounds=rounds, timeout_s=timeout,
                        on_call=on_call, cancelled=cancelled)

        self.ledger.record_request(key)
        if self.ledger.exhausted(key):
            if self.key_budget_policy == "refuse":
                return run(request_budget).finish(
                    "refused", f"the budget of key {key or 'anonymous'} (${self.ledger.budget_usd(key):g}) is spent")
            return run(request_budget).cheapest_acceptable()
        return run(_lowest(request_budget, self.ledger.remaining_usd(key))).routed()


def _lowest(*values: float | None) -> float | None:
    """The smallest of the values that are not None (None when all are)."""
    present = [v for v in values if v is not None]
    return min(present) if present else None


class _Run:
    """The state of one request (kept off the shared ``Executor``, so requests may run in parallel)."""

    def __init__(self, ex: Executor, query: Query, candidates: Sequence[ModelDescriptor], knob: float, key: str | None,
                 budget: float | None, *, max_rounds: int | None = None, timeout_s: float | None = None,
                 on_call: Callable[[CallRecord], None] | None = None, cancelled: Callable[[], bool] | None = None):
        self.ex = ex
        self.max_rounds = ex.max_rounds if max_rounds is None else max_rounds
        self.timeout_s = timeout_s if timeout_s is not None else ex.timeout_s
        self.on_call = on_call
        self.cancelled = cancelled
        self.query = query
        self.candidates = list(candidates)
        self.by_id = {c.id: c for c in candidates}
        self.knob = knob
        self.key = key
        self.result = CompletionResult(key=key)
        self.attempts: list[Attempt] = []
        self.failed: set[str] = set()
        self.answered: set[str] = set()
        self.spent = 0.0
        self.started = time.monotonic()
        self.budget = budget  # this request's USD cap (None = none)
        messages = [{"role": "system", "content": ex.system_prompt}] if ex.system_prompt else []
        self.messages = messages + [{"role": "user", "content": query.text}]

    # -- modes ---------------------------------------------------------------------------------
    def routed(self) -> CompletionResult:
        for rnd in range(1, self.max_rounds + 1):
            decision = self.ex.router.decide(self.query, self.candidates, self.knob, tuple(self.attempts))
            self.result.think.append(decision.think)
            if decision.action == "accept":
                if self.attempts:
                    return self.finish("accepted", f"the router accepted the answer of {self.attempts[-1].model_id}")
                log.warning("router %s accepted before any answer; calling its top-ranked model", self.ex.router.name)
            stop = self.call_in_order(rnd, self.fallback_order(decision))
            if stop is not None:
                return stop
        return self.finish("max_rounds", f"{self.max_rounds} round(s) used; the last answer is final")

    def cheapest_acceptable(self) -> CompletionResult:
        """The key's budget is spent: the cheapest acceptable model, one round, no router."""
        acceptable = [c for c in self.candidates if (c.overall_score() or 0.0) >= self.ex.min_acceptable_score]
        if not acceptable:
            return self.finish("refused", f"no candidate reaches the minimum acceptable score {self.ex.min_acceptable_score:g}")
        order = sorted(acceptable, key=lambda c: (c.estimate_cost_usd(self.query.tokens), c.id))
        spent_note = f"the budget of key {self.key or 'anonymous'} is spent: cheapest acceptable model"
        self.result.think.append(spent_note)
        stop = self.call_in_order(1, [c.id for c in order])
        if stop is not None:
            return stop
        return self.finish("accepted", spent_note)

    # -- calls ---------------------------------------------------------------------------------
    def fallback_order(self, decision: Decision) -> list[str]:
        """The router's choice, then the rest of its ranking, then any candidate it left out."""
        order: list[str] = []
        for model_id in [decision.model_id] + [m for m, _ in decision.ranking] + [c.id for c in self.candidates]:
            if model_id is not None and model_id not in order:
                order.append(model_id)
        return order

    def call_in_order(self, rnd: int, order: list[str]) -> CompletionResult | None:
        """Call the first model of ``order`` that can answer; None when one did (the request
        goes on), else the finished result."""
        budget_skips = failed_calls = 0
        for position, model_id in enumerate(order):
            fallback = position > 0
            if model_id in self.failed or (fallback and model_id in self.answered):
                continue  # a model that failed, or (as a fallback) one that already answered, is not asked again
            desc = self.by_id.get(model_id)
            if desc is None:
                self.record(CallRecord(rnd, model_id, "skipped", "not a candidate of this request", fallback=fallback))
                continue
            est = desc.estimate_cost_usd(self.query.tokens)
            left = None if self.budget is None else self.budget - self.spent
            if left is not None and est > left:
                budget_skips += 1
                self.record(CallRecord(rnd, model_id, "skipped", f"budget: estimated cost ${est:.6f} exceeds the ${max(left, 0):.6f} left", fallback=fallback))
                continue
            if self.cancelled is not None and self.cancelled():
                return self.finish("cancelled", "the caller went away")
            time_left = self.time_left()
            if time_left is not None and time_left <= 0:
                return self.finish("deadline", f"the request's {self.timeout_s:g} s ran out")
            if self.call(rnd, desc, fallback, time_left):
                return None
            failed_calls += 1
        over = f"${self.budget:g} for this request, ${self.spent:.6f} spent" if budget_skips else ""
        if budget_skips and not failed_calls:  # the budget alone stopped this round
            return self.finish("budget", f"no model left whose estimated cost fits the budget ({over})")
        rest = f"; the other {budget_skips} exceed the budget ({over})" if budget_skips else ""
        if self.attempts:
            return self.finish("failed", f"no further model could answer{rest}; the answer of {self.attempts[-1].model_id} stands")
        if budget_skips:
            return self.finish("failed", f"every model within the budget failed{rest}")
        return self.finish("failed", "every candidate failed")

    def call(self, rnd: int, desc: ModelDescriptor, fallback: bool, time_left: float | None) -> bool:
        """Call one model; record it; True when it answered."""
        with self.ex.lease(desc) as provider:
            if provider is None:
                self.failed.add(desc.id)
                self.record(CallRecord(rnd, desc.id, "failed", "no endpoint for this model", fallback=fallback))
                return False
            timeout = provider.timeout_s if time_left is None else min(provider.timeout_s, time_left)
            started = time.monotonic()
            try:
                answer = provider.complete(self.messages, timeout_s=timeout)
            except Exception as exc:  # noqa: BLE001 - a provider's failure is this call's, not the request's
                if isinstance(exc, ProviderError):
                    reason = f"{exc.kind}: {exc.reason}"
                    log.info("%s failed (%s); falling back", desc.id, reason)
                else:
                    reason = f"error: {type(exc).__name__}: {shorten(exc)}"
                    log.exception("%s: the provider raised %s; falling back", desc.id, type(exc).__name__)
                self.failed.add(desc.id)
                cost, pt, ct = (exc.cost_usd, exc.prompt_tokens, exc.completion_tokens) if isinstance(exc, ProviderError) else (0.0, 0, 0)
                self.spent += cost
                self.record(CallRecord(rnd, desc.id, "failed", reason, latency_ms=(time.monotonic() - started) * 1000.0,
                                       prompt_tokens=pt, completion_tokens=ct, cost_usd=cost, fallback=fallback))
                self.ex.ledger.record_call(self.key, desc.id, cost_usd=cost, prompt_tokens=pt, completion_tokens=ct, ok=False)
                return False
        self.spent += answer.cost_usd
        self.answered.add(desc.id)
        self.attempts.append(Attempt(desc.id, answer.text, answer.cost_usd))
        self.record(CallRecord(
            rnd, desc.id, "ok", "", answer.latency_ms, answer.prompt_tokens, answer.completion_tokens,
            answer.cost_usd, fallback, answer.text,
        ))
        self.ex.ledger.record_call(
            self.key, desc.id, cost_usd=answer.cost_usd, prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens, ok=True,
        )
        return True

    def record(self, call: CallRecord) -> None:
        if not call.think and 0 < call.round <= len(self.result.think) and self.result.think[call.round - 1]:
            call = replace(call, think=self.result.think[call.round - 1])
        self.result.calls.append(call)
        if call.fallback and call.status != "skipped":
            self.result.fallback = True
        if self.on_call is not None:
            try:
                self.on_call(call)
            except Exception:  # noqa: BLE001 - a listener's fault must not fail the request
                log.exception("on_call listener failed")

    def time_left(self) -> float | None:
        if self.timeout_s is None:
            return None
        return self.timeout_s - (time.monotonic() - self.started)

    def finish(self, stop: Stop, message: str) -> CompletionResult:
        if self.attempts:
            self.result.answer = self.attempts[-1].response
            self.result.final_model = self.attempts[-1].model_id
        self.result.stop = stop
        self.result.message = message
        return self.result
