"""``cluster-probe``: predict a candidate's score from its accuracy on the query's probe cluster.

k-means (``n_clusters``, seeded) over the probe prompts' embeddings; a query belongs to the
nearest centroid; a candidate's predicted score = mean of its probe results within that cluster,
shrunk toward ``descriptor_prior`` (domain sample score, else overall) by ``prior_weight``
pseudo-results, and ``descriptor_prior`` itself when it has no result there.

Defaults ``n_clusters = 10``, ``prior_weight = 2`` were chosen on the val split of both shared
datasets (docs/results.md).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.cluster import KMeans

from routerl.descriptors.model import ModelDescriptor
from routerl.routers.base import Query
from routerl.routers.prior import descriptor_priors, shrink
from routerl.routers.probe_index import ProbeIndex
from routerl.routers.probe_router import ProbeRouter

DEFAULT_CLUSTERS = 10
DEFAULT_PRIOR_WEIGHT = 2.0


class ProbeClusters:
    """k-means over ``index.embeddings``: ``labels`` (Np,), ``centroids`` (C, D)."""

    def __init__(self, index: ProbeIndex, n_clusters: int = DEFAULT_CLUSTERS, seed: int = 0):
        if int(n_clusters) < 1:
            raise ValueError(f"option 'n_clusters' must be at least 1, got {n_clusters}")
        self.n_clusters = min(int(n_clusters), len(index))
        km = KMeans(n_clusters=self.n_clusters, n_init=4, random_state=seed).fit(index.embeddings)
        self.labels = km.labels_.astype(int)
        self.centroids = km.cluster_centers_.astype(np.float32)
        self._onehot = np.eye(self.n_clusters)[self.labels]  # (Np, C)

    @classmethod
    def from_arrays(cls, labels: np.ndarray, centroids: np.ndarray) -> "ProbeClusters":
        """Clusters saved earlier: ``labels`` (Np,) of the index's prompts, ``centroids`` (C, D)."""
        labels = np.asarray(labels, dtype=int)
        centroids = np.asarray(centroids, dtype=np.float32)
        if centroids.ndim != 2 or labels.ndim != 1 or (labels.size and not 0 <= labels.min() <= labels.max() < len(centroids)):
            raise ValueError(f"cluster labels {labels.shape} do not index the centroids {centroids.shape}")
        self = cls.__new__(cls)
        self.n_clusters = len(centroids)
        self.labels, self.centroids = labels, centroids
        self._onehot = np.eye(self.n_clusters)[labels]
        return self

    def assign(self, embeddings: np.ndarray) -> np.ndarray:
        """``(N,)`` nearest centroid (Euclidean) of each ``(N, D)`` embedding."""
        d2 = (embeddings**2).sum(1)[:, None] - 2 * embeddings @ self.centroids.T + (self.centroids**2).sum(1)[None, :]
        return np.argmin(d2, axis=1)

    def cluster_means(self, results: np.ndarray) -> np.ndarray:
        """``(K, C)`` mean of each candidate's ``(K, Np)`` results per cluster (NaN where none)."""
        return self.cluster_stats(results)[0]

    def cluster_stats(self, results: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, count)``, each ``(K, C)``: per cluster, the candidate's mean result (NaN where
        none) and how many results it has there."""
        have = np.isfinite(results)
        total = np.where(have, results, 0.0) @ self._onehot
        count = have.astype(float) @ self._onehot
        return np.where(count > 0, total / np.maximum(count, 1), np.nan), count


class ClusterProbeRouter(ProbeRouter):
    """Score = the candidate's mean probe result in the query's cluster."""

    name = "cluster-probe"

    def __init__(
        self,
        index: ProbeIndex,
        embedder,
        n_clusters: int = DEFAULT_CLUSTERS,
        seed: int = 0,
        prior_weight: float = DEFAULT_PRIOR_WEIGHT,
    ):
        super().__init__(index, embedder)
        if not float(prior_weight) >= 0:
            raise ValueError(f"option 'prior_weight' must be >= 0, got {prior_weight}")
        self.clusters = ProbeClusters(index, n_clusters, seed)
        self.prior_weight = float(prior_weight)

    def predict(self, query: Query, candidates: Sequence[ModelDescriptor]) -> np.ndarray:
        c = self.clusters.assign(self.query_embedding(query)[None, :])[0]
        mean, count = self.clusters.cluster_stats(self.index.matrix(candidates))
        return shrink(mean[:, c], count[:, c], descriptor_priors(candidates, query.domain), self.prior_weight)
