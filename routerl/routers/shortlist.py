"""The shortlist: which candidates of a large pool the policy LM is shown, with per-query evidence.

A 135M policy cannot weigh 30-60 candidates in one prompt, and the evidence that matters most is
per query (how each candidate did on the probe prompts nearest to this one). So before the policy
reads anything, an *evidence router* (a ``ScoreRouter`` that reads only descriptors, probe results
and prices: ``knn-probe``, or the ``learned`` predictor of ``learned_evidence``, the shipped
policy's) estimates every candidate's score for the query, and the
``size`` candidates with the highest ``estimate - knob * est. cost * 1000`` are shown to the
policy together with their estimate. The policy then picks among them, reads the answer and
accepts or escalates (to another shortlisted model).

A model registered at run time is shortlisted exactly like a seen one: its estimate comes from its
descriptor's probe results (or its sample scores when it has none).

``order``: ``value`` (best estimated utility first), ``cost`` (cheapest first, the serving default:
no ranking is given away by position) or ``random`` (training: the policy must read the numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from routerl.descriptors.model import ModelDescriptor
from routerl.routers.base import Query, utility

ORDERS = ("cost", "value", "random")


def check_order(order: str, field: str = "shortlist_order") -> None:
    """ValueError naming ``field`` unless ``order`` is one of ``ORDERS``."""
    if order not in ORDERS:
        raise ValueError(f"field '{field}' must be one of {', '.join(ORDERS)}, got {order!r}")


def display_order(order: str, training: bool) -> str:
    """The order a shortlist is shown in: ``random`` shuffles training episodes only; elsewhere
    (evaluation, serving) it lists the cheapest first."""
    return "cost" if order == "random" and not training else order


@dataclass(frozen=True)
class Shortlist:
    """Positions (into the full candidate list) of the shortlisted candidates, in display order,
    and their evidence estimates (same order)."""

    positions: tuple[int, ...]
    estimates: tuple[float, ...]

    def candidates(self, candidates: Sequence[ModelDescriptor]) -> list[ModelDescriptor]:
        return [candidates[p] for p in self.positions]


def select_shortlist(
    estimates: np.ndarray,
    costs: np.ndarray,
    knob: float,
    size: int,
    *,
    include: Sequence[int] = (),
    order: str = "cost",
    rng: np.random.Generator | None = None,
) -> Shortlist:
    """The ``size`` best candidates by ``utility(estimates, costs, knob)`` (ties: cheaper first).

    Args:
        estimates: ``(K,)`` estimated scores.
        costs: ``(K,)`` estimated USD cost of one call.
        knob: the cost knob (score points per $ per 1k queries).
        size: shortlist length (all K when K <= size).
        include: positions that must be on the list (models already called for this request);
            they take the places of the lowest-ranked others.
        order: display order, one of ``ORDERS`` (``random`` needs ``rng``).
    """
    est = np.asarray(estimates, dtype=float)
    cost = np.asarray(costs, dtype=float)
    if est.shape != cost.shape or est.ndim != 1:
        raise ValueError(f"estimates and costs must be (K,) arrays of one length, got {est.shape} and {cost.shape}")
    if size < 1:
        raise ValueError(f"shortlist size must be >= 1, got {size}")
    check_order(order, "order")
    u = utility(np.nan_to_num(est, nan=0.0), cost, knob)
    ranked = sorted(range(len(est)), key=lambda k: (-u[k], cost[k], k))
    must = [int(k) for k in dict.fromkeys(include)]
    chosen = must + [k for k in ranked if k not in must][: max(0, size - len(must))]
    if order == "value":
        chosen.sort(key=lambda k: (-u[k], cost[k], k))
    elif order == "cost":
        chosen.sort(key=lambda k: (cost[k], k))
    else:
        if rng is None:
            raise ValueError("order 'random' needs an rng")
        chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    return Shortlist(tuple(chosen), tuple(float(est[k]) for k in chosen))


def evidence_estimates(evidence, query: Query, candidates: Sequence[ModelDescriptor]) -> tuple[np.ndarray, np.ndarray]:
    """``(estimates, costs)``, each ``(K,)``: ``evidence.predict`` (a ``ScoreRouter``) and the
    descriptors' estimated USD cost of one call for this query."""
    est = np.asarray(evidence.predict(query, candidates), dtype=float)
    cost = np.array([c.estimate_cost_usd(query.tokens) for c in candidates])
    return est, cost


def shortlist_for(evidence, query: Query, candidates: Sequence[ModelDescriptor], knob: float, size: int, **options) -> Shortlist:
    """``select_shortlist`` (``options``: its ``include``, ``order``, ``rng``) over
    ``evidence_estimates``."""
    return select_shortlist(*evidence_estimates(evidence, query, candidates), knob, size, **options)
