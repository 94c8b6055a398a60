"""``ProbeRouter``: the base of routers that compare a query's embedding with probe prompts.

It holds an embedder and a ``ProbeIndex``; ``prepare(queries)`` embeds many query texts in one
batch (``routerl eval`` calls it before routing, so later per-query lookups hit the cache).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from routerl.routers.base import Query, ScoreRouter
from routerl.routers.probe_index import ProbeIndex


class ProbeRouter(ScoreRouter):
    """A ``ScoreRouter`` with an ``embedder`` and a probe ``index``."""

    def __init__(self, index: ProbeIndex, embedder):
        self.index = index
        self.embedder = embedder

    def prepare(self, queries: Sequence[Query]) -> None:
        """Embed the texts of ``queries`` in one batch (fills the embedder's cache)."""
        if queries:
            self.embedder.embed([q.text for q in queries])

    def query_embedding(self, query: Query) -> np.ndarray:
        """``(D,)`` the unit embedding of the query text."""
        return self.embedder.embed([query.text])[0]
