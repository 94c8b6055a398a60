"""The ``Router`` interface shared by baselines, the RL policy, ``routerl eval`` and the server.

The cost knob
-------------
Every router trades quality for cost through one knob ``lambda >= 0``, in *score points per
dollar per 1,000 queries*::

    utility(candidate) = expected score - lambda * (cost of one call in USD * 1000)

``lambda = 0`` buys the best expected answer whatever it costs; ``lambda = 1`` pays at most one
full score point for a model costing $1 per 1k queries more. Named modes map to knobs
(``MODES``). The same definition is the reward's cost term and the cost-aware oracle's objective.

Decisions
---------
A router sees a ``Query``, the candidates' ``ModelDescriptor``s (in pool order) and the previous
``Attempt``s of this request, and returns a ``Decision``: route to a candidate (``action='route'``)
or accept the last attempt's answer (``action='accept'``). ``ranking`` lists every candidate with
a probability, best first: the fallback order.

Batching (optional)
-------------------
A router that can decide several requests in one pass (e.g. one batched forward of a policy LM)
defines ``decide_batch(calls: list[RouteCall]) -> list[Decision]``, one decision per call, in
order. The server then collects concurrent ``Route()`` requests for a few milliseconds and calls it
once per batch (``routerl.server.batching``); routers without it are called per request.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import numpy as np

from routerl.descriptors.model import ModelDescriptor

MODES = {"quality": 0.0, "balanced": 0.1, "cost": 1.0}
USD_SCALE = 1000.0  # the knob's cost unit: USD per 1,000 queries


def knob_for_mode(mode: str) -> float:
    try:
        return MODES[mode]
    except KeyError:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}") from None


def utility(score: np.ndarray | float, cost_usd: np.ndarray | float, knob: float):
    """``score - knob * cost_usd * 1000`` (see the module docstring)."""
    return score - knob * np.asarray(cost_usd) * USD_SCALE


def best_value(u: Sequence[float], costs: Sequence[float], allowed: Iterable[int]) -> int:
    """The position in ``allowed`` with the highest utility ``u`` (ties: lower cost, then position)."""
    return min(allowed, key=lambda k: (-u[k], costs[k], k))


def estimate_prompt_tokens(text: str) -> float:
    """A tokenizer-free estimate (about 4 characters per token) when the caller gives none."""
    return max(1.0, math.ceil(len(text) / 4))


@dataclass(frozen=True)
class Query:
    """A request to route. ``prompt_id`` is set only when routing a recorded prompt (evaluation),
    which lets the oracle look up true outcomes; no other router may depend on it."""

    text: str
    prompt_id: str | None = None
    domain: str | None = None
    prompt_tokens: float | None = None

    @property
    def tokens(self) -> float:
        return self.prompt_tokens if self.prompt_tokens else estimate_prompt_tokens(self.text)


@dataclass(frozen=True)
class Attempt:
    """A previous call of this request: which model answered, what it said, what it cost."""

    model_id: str
    response: str
    cost_usd: float = 0.0


@dataclass(frozen=True)
class RouteCall:
    """One routing request, as handed to ``decide_batch``: the arguments of one ``decide`` call."""

    query: Query
    candidates: Sequence[ModelDescriptor]
    knob: float
    attempts: Sequence[Attempt] = ()


@dataclass
class Decision:
    action: Literal["route", "accept"]
    model_id: str | None
    ranking: list[tuple[str, float]] = field(default_factory=list)
    think: str = ""
    est_cost_usd: float = 0.0
    router: str = ""


class Router(ABC):
    """Decides, for one query and a pool of candidates, which model to call next, or to accept.

    ``max_rounds``: how many calls the router may make for one request (1 = single call).
    """

    name: str = "router"
    max_rounds: int = 1

    @abstractmethod
    def decide(
        self,
        query: Query,
        candidates: Sequence[ModelDescriptor],
        knob: float,
        attempts: Sequence[Attempt] = (),
    ) -> Decision:
        """Route to one of ``candidates`` or accept the last attempt."""

    def decide_many(
        self,
        query: Query,
        candidates: Sequence[ModelDescriptor],
        knobs: Sequence[float],
        attempts: Sequence[Attempt] = (),
    ) -> list[Decision]:
        """One decision per knob (a knob sweep); routers override this to share work."""
        return [self.decide(query, candidates, k, attempts) for k in knobs]


def softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = (x - x.max()) / max(temperature, 1e-9)
    e = np.exp(z)
    return e / e.sum()


class ScoreRouter(Router):
    """A router that predicts each candidate's expected score and maximises utility.

    Subclasses implement ``predict`` (shape ``(K,)``, one expected score per candidate). A single
    call: once an attempt exists, the decision is to accept it. ``temperature`` turns utilities
    into the ranking's probabilities.
    """

    temperature: float = 0.05

    @abstractmethod
    def predict(self, query: Query, candidates: Sequence[ModelDescriptor]) -> np.ndarray:
        """Expected score in [0, 1] of each candidate on ``query``; shape ``(K,)``."""

    def costs(self, query: Query, candidates: Sequence[ModelDescriptor]) -> np.ndarray:
        """Estimated USD cost of calling each candidate; shape ``(K,)``."""
        return np.array([c.estimate_cost_usd(query.tokens) for c in candidates])

    def _decision(self, candidates, predicted, costs, knob, attempts) -> Decision:
        if attempts:
            return Decision("accept", attempts[-1].model_id, [], router=self.name)
        u = utility(predicted, costs, knob)
        # Ties are broken by lower cost, then by position.
        order = sorted(range(len(candidates)), key=lambda k: (-u[k], costs[k], k))
        probs = softmax(u, self.temperature)
        best = order[0]
        return Decision(
            action="route",
            model_id=candidates[best].id,
            ranking=[(candidates[k].id, float(probs[k])) for k in order],
            est_cost_usd=float(costs[best]),
            router=self.name,
        )

    def decide(self, query, candidates, knob, attempts=()):
        if not candidates:
            raise ValueError("no candidates to route to")
        return self._decision(candidates, self.predict(query, candidates), self.costs(query, candidates), knob, attempts)

    def decide_many(self, query, candidates, knobs, attempts=()):
        if not candidates:
            raise ValueError("no candidates to route to")
        predicted = self.predict(query, candidates)
        costs = self.costs(query, candidates)
        return [self._decision(candidates, predicted, costs, k, attempts) for k in knobs]
