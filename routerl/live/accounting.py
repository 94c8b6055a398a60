"""Spend accounting: calls, tokens and USD per model and per caller key, with per-key budgets.

A "key" is the caller's API key *id* or tenant string (never a secret). ``SpendLedger.record``
is called once per provider call (failed calls count as calls with their cost, usually 0);
``snapshot()`` returns plain numbers for a status page or a metrics exporter. Thread-safe.
Spend only grows: a cost that is negative or not a finite number (a provider's bogus usage, a
bug) is counted as 0 and logged, never as a refund; negative token counts count as 0.

Per-key budgets: ``budgets`` maps key -> USD (``default_budget_usd`` applies to keys not listed;
None = unlimited). ``remaining_usd(key)`` is what is left; ``exhausted(key)`` is True once
nothing is left. Budgets are soft under concurrency: requests already running when a key runs
out finish, and their spend is recorded.

If ``prometheus_registry`` is given (a ``prometheus_client.CollectorRegistry``), counters
``routerl_model_calls_total{model,status}``, ``routerl_model_tokens_total{model,kind}``,
``routerl_model_spend_usd_total{model}`` and ``routerl_key_spend_usd_total{key}`` are registered
in it and kept up to date.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

log = logging.getLogger(__name__)


@dataclass
class ModelSpend:
    """Totals of one model."""

    calls: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class KeySpend:
    """Totals of one caller key, with its budget (None = unlimited) and what is left of it."""

    calls: int = 0
    requests: int = 0
    cost_usd: float = 0.0
    budget_usd: float | None = None
    remaining_usd: float | None = None


@dataclass
class SpendSnapshot:
    """A consistent copy of every counter at one moment."""

    by_model: dict[str, ModelSpend] = field(default_factory=dict)
    by_key: dict[str, KeySpend] = field(default_factory=dict)
    total_cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_cost_usd": self.total_cost_usd,
            "by_model": {m: vars(s).copy() for m, s in sorted(self.by_model.items())},
            "by_key": {k: vars(s).copy() for k, s in sorted(self.by_key.items())},
        }


ANONYMOUS = "anonymous"  # the key of requests that name none


def _budget(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"field '{name}': a budget must be a finite number of USD >= 0, got {value!r}")
    return float(value)


def _spend(name: str, value: Any, model_id: str) -> float:
    """``value`` (a cost or a token count) when it is a finite number >= 0; anything else is
    logged and counted as 0."""
    if not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
        return value
    log.error("%s: field '%s' of a call is %r; counted as 0 (spend never goes down)", model_id, name, value)
    return 0.0


class SpendLedger:
    """Thread-safe spend counters per model and per key (see the module docstring)."""

    def __init__(
        self,
        budgets: Mapping[str, float] | None = None,
        default_budget_usd: float | None = None,
        prometheus_registry: Any = None,
    ):
        self._budgets = {k: _budget(f"budgets.{k}", v) for k, v in (budgets or {}).items()}
        self._default_budget = _budget("default_budget_usd", default_budget_usd)
        self._models: dict[str, ModelSpend] = {}
        self._keys: dict[str, KeySpend] = {}
        self._lock = threading.Lock()
        self._metrics = _PrometheusCounters(prometheus_registry) if prometheus_registry is not None else None

    # -- budgets -------------------------------------------------------------------------------
    def set_budget(self, key: str, budget_usd: float | None) -> None:
        with self._lock:
            self._budgets[key] = _budget(f"budgets.{key}", budget_usd)

    def budget_usd(self, key: str | None) -> float | None:
        return self._budgets.get(key or ANONYMOUS, self._default_budget)

    def remaining_usd(self, key: str | None) -> float | None:
        """USD left for ``key`` (None = unlimited; never below 0)."""
        key = key or ANONYMOUS
        with self._lock:
            budget = self._budgets.get(key, self._default_budget)
            if budget is None:
                return None
            spent = self._keys[key].cost_usd if key in self._keys else 0.0
        return max(0.0, budget - spent)

    def exhausted(self, key: str | None) -> bool:
        remaining = self.remaining_usd(key)
        return remaining is not None and remaining <= 0.0

    # -- recording -----------------------------------------------------------------------------
    def record_call(
        self,
        key: str | None,
        model_id: str,
        *,
        cost_usd: float = 0.0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        ok: bool = True,
    ) -> None:
        """Count one provider call of ``model_id`` made for ``key`` (a cost that is negative or not
        finite counts as 0: spend never goes down)."""
        key = key or ANONYMOUS
        cost_usd = _spend("cost_usd", cost_usd, model_id)
        prompt_tokens = int(_spend("prompt_tokens", prompt_tokens, model_id))
        completion_tokens = int(_spend("completion_tokens", completion_tokens, model_id))
        with self._lock:
            m = self._models.setdefault(model_id, ModelSpend())
            m.calls += 1
            m.failures += 0 if ok else 1
            m.prompt_tokens += int(prompt_tokens)
            m.completion_tokens += int(completion_tokens)
            m.cost_usd += float(cost_usd)
            k = self._keys.setdefault(key, KeySpend())
            k.calls += 1
            k.cost_usd += float(cost_usd)
        if self._metrics is not None:
            self._metrics.call(key, model_id, cost_usd, prompt_tokens, completion_tokens, ok)

    def record_request(self, key: str | None) -> None:
        """Count one request (however many calls it made) for ``key``."""
        key = key or ANONYMOUS
        with self._lock:
            self._keys.setdefault(key, KeySpend()).requests += 1

    def snapshot(self) -> SpendSnapshot:
        with self._lock:
            by_model = {m: ModelSpend(**vars(s)) for m, s in self._models.items()}
            by_key = {}
            for k, s in self._keys.items():
                budget = self._budgets.get(k, self._default_budget)
                remaining = None if budget is None else max(0.0, budget - s.cost_usd)
                by_key[k] = KeySpend(s.calls, s.requests, s.cost_usd, budget, remaining)
        return SpendSnapshot(by_model, by_key, sum(s.cost_usd for s in by_model.values()))


class _PrometheusCounters:
    """The ledger's counters in a ``prometheus_client`` registry."""

    def __init__(self, registry: Any):
        from prometheus_client import Counter

        self.calls = Counter("routerl_model_calls", "Provider calls", ["model", "status"], registry=registry)
        self.tokens = Counter("routerl_model_tokens", "Tokens used", ["model", "kind"], registry=registry)
        self.model_usd = Counter("routerl_model_spend_usd", "USD spent per model", ["model"], registry=registry)
        self.key_usd = Counter("routerl_key_spend_usd", "USD spent per caller key", ["key"], registry=registry)

    def call(self, key: str, model: str, cost: float, pt: int, ct: int, ok: bool) -> None:
        self.calls.labels(model=model, status="ok" if ok else "failed").inc()
        self.tokens.labels(model=model, kind="prompt").inc(max(0, pt))
        self.tokens.labels(model=model, kind="completion").inc(max(0, ct))
        self.model_usd.labels(model=model).inc(max(0.0, cost))
        self.key_usd.labels(key=key).inc(max(0.0, cost))
