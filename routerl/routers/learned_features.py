"""Features of (query, candidate) pairs for the ``learned`` router: the evidence the policy reads.

Per pair, ``FEATURE_NAMES`` (NaN = missing, which gradient boosting handles natively):

==================  ===============================================================
knn                 mean probe result on the candidate's k nearest probe prompts
knn_wide            the same with ``k_wide`` neighbours
knn_support         neighbours found / k (0 when the model has no probe results)
knn_sim             mean cosine similarity of the query to those k neighbours
cluster             mean probe result in the query's k-means cluster
domain_score        the descriptor's sample score on the query's domain
domain_count        log1p of the number of probe prompts behind it
overall             the descriptor's overall probe score
log_in_price        log10(input USD/Mtok + 0.01)
log_out_price       log10(output USD/Mtok + 0.01)
log_est_cost        log10(estimated USD per 1k calls + 1e-4)
log_prompt_tokens   log10(prompt tokens)
log_out_tokens      log10(typical output tokens)
==================  ===============================================================

Everything comes from descriptors (probe rows and prices) and the query; no outcome is read.

``DESCRIPTOR_FEATURES`` are the columns a descriptor gives without probe results (a model
registered with per-domain sample scores only): ``descriptor_features`` builds them without
embeddings, and ``has_probe_evidence`` tells which pairs have the kNN and cluster columns.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from routerl.descriptors.model import ModelDescriptor
from routerl.routers.cluster_probe import ProbeClusters
from routerl.routers.knn_probe import knn_estimate
from routerl.routers.probe_index import ProbeIndex

FEATURE_NAMES = (
    "knn",
    "knn_wide",
    "knn_support",
    "knn_sim",
    "cluster",
    "domain_score",
    "domain_count",
    "overall",
    "log_in_price",
    "log_out_price",
    "log_est_cost",
    "log_prompt_tokens",
    "log_out_tokens",
)
DESCRIPTOR_FEATURES = FEATURE_NAMES[5:]  # domain_score ... log_out_tokens: no probe results needed
DESCRIPTOR_COLUMNS = tuple(FEATURE_NAMES.index(n) for n in DESCRIPTOR_FEATURES)
_SUPPORT = FEATURE_NAMES.index("knn_support")


def has_probe_evidence(x: np.ndarray) -> np.ndarray:
    """``(...,)`` bool: which rows of ``(..., F)`` features have probe results behind them."""
    return np.nan_to_num(x[..., _SUPPORT], nan=0.0) > 0


def descriptor_features(domains: Sequence[str | None], prompt_tokens: np.ndarray, candidates: Sequence[ModelDescriptor]) -> np.ndarray:
    """``(N, K, F)`` features with only the ``DESCRIPTOR_FEATURES`` columns filled (NaN elsewhere):
    what the descriptors and the queries' domains and token counts give, without embeddings."""
    out = np.full((len(domains), len(candidates), len(FEATURE_NAMES)), np.nan)
    tokens = np.maximum(np.asarray(prompt_tokens, dtype=np.float64), 1.0)
    for c, desc in enumerate(candidates):
        overall = desc.overall_score()
        out[:, c, 7] = np.nan if overall is None else overall
        out[:, c, 8] = np.log10(desc.input_price_per_mtok + 0.01)
        out[:, c, 9] = np.log10(desc.output_price_per_mtok + 0.01)
        cost = (desc.input_price_per_mtok * tokens + desc.output_price_per_mtok * desc.output_tokens) / 1e6
        out[:, c, 10] = np.log10(cost * 1000 + 1e-4)
        out[:, c, 12] = np.log10(desc.output_tokens)
        for n, d in enumerate(domains):
            if d and d in desc.sample_scores:
                out[n, c, 5] = desc.sample_scores[d]
                out[n, c, 6] = np.log1p(desc.sample_counts.get(d, 0))
    out[:, :, 11] = np.log10(tokens)[:, None]
    return out


class PairFeatures:
    """Builds ``(N, K, F)`` feature arrays for N queries x K candidates."""

    def __init__(self, index: ProbeIndex, clusters: ProbeClusters, k: int = 10, k_wide: int = 40, chunk: int = 1024):
        self.index = index
        self.clusters = clusters
        self.k = int(k)
        self.k_wide = int(k_wide)
        self.chunk = int(chunk)

    def build(
        self,
        embeddings: np.ndarray,
        domains: Sequence[str | None],
        prompt_tokens: np.ndarray,
        candidates: Sequence[ModelDescriptor],
    ) -> np.ndarray:
        """Features of every (query, candidate) pair.

        Args:
            embeddings: ``(N, D)`` query embeddings.
            domains: ``(N,)`` query domains (None when unknown).
            prompt_tokens: ``(N,)`` prompt token counts.
            candidates: K descriptors.
        Returns:
            ``(N, K, F)`` float64, F = ``len(FEATURE_NAMES)``.
        """
        N = len(embeddings)
        out = descriptor_features(domains, prompt_tokens, candidates)
        results = self.index.matrix(candidates)  # (K, Np)
        cluster_means = self.clusters.cluster_means(results)  # (K, C)
        for start in range(0, N, self.chunk):
            sl = slice(start, min(start + self.chunk, N))
            sims = embeddings[sl] @ self.index.embeddings.T  # (n, Np)
            est, count, sim = knn_estimate(sims, results, self.k)
            wide, _, _ = knn_estimate(sims, results, self.k_wide)
            out[sl, :, 0] = est
            out[sl, :, 1] = wide
            out[sl, :, 2] = count / self.k
            out[sl, :, 3] = sim
            out[sl, :, 4] = cluster_means[:, self.clusters.assign(embeddings[sl])].T
        return out
