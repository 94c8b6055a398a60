"""``cheapest``: the candidate with the lowest estimated cost (ties: pool order); ignores the knob."""

from __future__ import annotations

from typing import Sequence

from routerl.descriptors.model import ModelDescriptor
from routerl.routers.base import Attempt, Decision, Query, Router


class CheapestRouter(Router):
    name = "cheapest"

    def decide(self, query: Query, candidates: Sequence[ModelDescriptor], knob: float, attempts: Sequence[Attempt] = ()) -> Decision:
        if not candidates:
            raise ValueError("no candidates to route to")
        if attempts:
            return Decision("accept", attempts[-1].model_id, [], router=self.name)
        costs = [c.estimate_cost_usd(query.tokens) for c in candidates]
        order = sorted(range(len(candidates)), key=lambda k: (costs[k], k))
        return Decision(
            "route",
            candidates[order[0]].id,
            [(candidates[k].id, 1.0 if n == 0 else 0.0) for n, k in enumerate(order)],
            est_cost_usd=costs[order[0]],
            router=self.name,
        )
