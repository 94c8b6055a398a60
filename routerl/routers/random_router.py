"""``random``: a uniformly random candidate, deterministic per (seed, prompt).

The draw is seeded by ``sha256(seed, prompt id or text)``, so the same prompt always gets the same
model (whatever the knob, which it ignores) and runs are reproducible.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from routerl.descriptors.model import ModelDescriptor
from routerl.routers.base import Attempt, Decision, Query, Router


class RandomRouter(Router):
    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def _rng(self, query: Query) -> np.random.Generator:
        key = f"{self.seed}:{query.prompt_id if query.prompt_id is not None else query.text}"
        return np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little"))

    def decide(self, query: Query, candidates: Sequence[ModelDescriptor], knob: float, attempts: Sequence[Attempt] = ()) -> Decision:
        if not candidates:
            raise ValueError("no candidates to route to")
        if attempts:
            return Decision("accept", attempts[-1].model_id, [], router=self.name)
        order = self._rng(query).permutation(len(candidates))
        p = 1.0 / len(candidates)
        best = candidates[order[0]]
        return Decision(
            "route",
            best.id,
            [(candidates[k].id, p) for k in order],
            est_cost_usd=best.estimate_cost_usd(query.tokens),
            router=self.name,
        )
