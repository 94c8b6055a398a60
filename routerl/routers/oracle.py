"""``oracle``: the cost-aware oracle, reading the true outcomes of the query's prompt.

For a recorded prompt (``query.prompt_id``) it maximises ``true score - knob * true cost * 1000``
over the candidates (ties: cheaper first), the protocol's reference. It is the only router that
reads test outcomes; it needs the outcome table and cannot route a query without a prompt id.
A candidate with no row for the prompt is never chosen (utility -inf).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from routerl.data.outcomes import OutcomeTable
from routerl.descriptors.model import ModelDescriptor
from routerl.routers.base import Query, ScoreRouter

MISSING_COST = 1e9  # finite, so that knob 0 x cost is 0, not NaN


class OracleRouter(ScoreRouter):
    name = "oracle"
    temperature = 1e-3

    def __init__(self, table: OutcomeTable):
        if table is None:
            raise ValueError("the oracle needs an outcome table (it reads true outcomes)")
        self.table = table
        self._available = table.available  # (P, M); a computed property, so read it once
        self._last: tuple[tuple, tuple[np.ndarray, np.ndarray]] | None = None

    def _row(self, query: Query, candidates: Sequence[ModelDescriptor]) -> tuple[np.ndarray, np.ndarray]:
        if query.prompt_id is None:
            raise ValueError("the oracle can only route recorded prompts (the query has no prompt_id)")
        key = (query.prompt_id, tuple(c.id for c in candidates))
        if self._last is not None and self._last[0] == key:
            return self._last[1]  # predict() and costs() of one decision share the lookup
        i = self.table.prompt_index(query.prompt_id)
        score = np.full(len(candidates), -np.inf)
        cost = np.full(len(candidates), MISSING_COST)
        for k, desc in enumerate(candidates):
            if self.table.has_model(desc.id):
                j = self.table.model_index(desc.id)
                if self._available[i, j]:
                    score[k] = self.table.score[i, j]
                    cost[k] = self.table.cost[i, j]
        if not np.isfinite(score).any():
            raise ValueError(f"the oracle has no recorded outcome for any candidate of prompt {query.prompt_id!r}")
        self._last = (key, (score, cost))
        return score, cost

    def predict(self, query: Query, candidates: Sequence[ModelDescriptor]) -> np.ndarray:
        return self._row(query, candidates)[0]

    def costs(self, query: Query, candidates: Sequence[ModelDescriptor]) -> np.ndarray:
        return self._row(query, candidates)[1]
