"""``knn-probe``: predict a candidate's score from its results on the nearest probe prompts.

For a query with embedding ``q``: for each candidate, take the ``k`` probe prompts most similar to
``q`` (cosine) *among those the candidate has a result for*, and predict the mean of its results
there. With ``prior_weight`` w > 0 the mean is shrunk toward ``descriptor_prior`` (the domain
sample score, else the overall score) as if w more results equal to it had been seen; a candidate
with no probe results gets ``descriptor_prior``. Then it maximises ``score - knob * est cost *
1000`` like every ScoreRouter.

Defaults ``k = 40``, ``prior_weight = 5`` were chosen on the val split of both shared datasets
(see docs/results.md).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from routerl.descriptors.model import ModelDescriptor
from routerl.routers.base import Query
from routerl.routers.prior import descriptor_priors, shrink
from routerl.routers.probe_index import ProbeIndex
from routerl.routers.probe_router import ProbeRouter
from routerl.routers.threads import single_thread

DEFAULT_K = 40
DEFAULT_PRIOR_WEIGHT = 5.0


def knn_estimate(sims: np.ndarray, results: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean result over each candidate's ``k`` most similar probe prompts that it has.

    Args:
        sims: ``(N, Np)`` query-probe similarities.
        results: ``(K, Np)`` candidates' probe results, NaN where missing.
        k: neighbours per (query, candidate).
    Returns:
        ``(est, count, sim)``, each ``(N, K)``: the mean result (NaN where the candidate has no
        result), the number of neighbours used (``min(k, results available)``) and their mean
        similarity to the query (NaN where none).
    """
    kk = max(1, min(int(k), sims.shape[1]))
    order = np.argsort(-sims, axis=1, kind="stable")  # (N, Np) probe prompts, most similar first
    near_sims = np.take_along_axis(sims, order, axis=1)  # (N, Np)
    near = np.moveaxis(results[:, order], 1, 0)  # (N, K, Np) each candidate's results in that order
    have = np.isfinite(near)
    used = have & (np.cumsum(have, axis=2) <= kk)  # the first kk results each candidate has
    count = used.sum(axis=2)
    denom = np.maximum(count, 1)
    est = np.where(count > 0, np.where(used, near, 0.0).sum(axis=2) / denom, np.nan)
    sim = np.where(count > 0, (used * near_sims[:, None, :]).sum(axis=2) / denom, np.nan)
    return est, count, sim


class KnnProbeRouter(ProbeRouter):
    """Score = mean probe result on the candidate's ``k`` nearest probe prompts."""

    name = "knn-probe"

    def __init__(self, index: ProbeIndex, embedder, k: int = DEFAULT_K, prior_weight: float = DEFAULT_PRIOR_WEIGHT):
        super().__init__(index, embedder)
        if int(k) < 1:
            raise ValueError(f"option 'k' must be at least 1, got {k}")
        if not float(prior_weight) >= 0:
            raise ValueError(f"option 'prior_weight' must be >= 0, got {prior_weight}")
        self.k = int(k)
        self.prior_weight = float(prior_weight)

    def predict(self, query: Query, candidates: Sequence[ModelDescriptor]) -> np.ndarray:
        q = self.query_embedding(query)
        with single_thread("blas"):
            sims = (self.index.embeddings @ q)[None, :]
            est, count, _ = knn_estimate(sims, self.index.matrix(candidates), self.k)
        return shrink(est[0], count[0], descriptor_priors(candidates, query.domain), self.prior_weight)
