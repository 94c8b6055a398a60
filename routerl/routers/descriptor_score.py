"""``descriptor-score``: a router that needs nothing but the candidates' descriptors.

It predicts a candidate's score on a query as its sample score on the query's domain when the
query names a domain the descriptor covers, else its overall probe score, else ``prior``; then it
maximises ``score - knob * cost`` like every ``ScoreRouter``. No outcome table, no training: it is
the server's default until a trained policy is available, and it routes a model registered at run
time as soon as its descriptor is in the registry.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from routerl.descriptors.model import ModelDescriptor
from routerl.routers.base import Query, ScoreRouter
from routerl.routers.prior import descriptor_prior
from routerl.routers.registry import RouterOptions, RouterResources, register_router


class DescriptorScoreRouter(ScoreRouter):
    """Expected score = domain sample score, else overall score, else ``prior``."""

    name = "descriptor-score"
    thread_safe = True  # stateless: the server may call it from many threads at once

    def __init__(self, prior: float = 0.5, temperature: float = 0.05):
        if not 0.0 <= float(prior) <= 1.0:
            raise ValueError(f"prior must be in [0, 1], got {prior}")
        if not 0.0 < float(temperature) < float("inf"):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        self.prior = float(prior)
        self.temperature = float(temperature)

    def predict(self, query: Query, candidates: Sequence[ModelDescriptor]) -> np.ndarray:
        return np.array([descriptor_prior(d, query.domain, self.prior) for d in candidates], dtype=np.float64)


@register_router(DescriptorScoreRouter.name)
def _build(resources: RouterResources, **options) -> DescriptorScoreRouter:
    opts = RouterOptions(DescriptorScoreRouter.name, options)
    prior = opts.take("prior", float, 0.5)
    temperature = opts.take("temperature", float, 0.05)
    opts.finish()
    return DescriptorScoreRouter(prior=prior, temperature=temperature)
