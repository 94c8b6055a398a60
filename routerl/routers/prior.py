"""A candidate's descriptor-only score estimate: the fallback of every evidence-based router.

``descriptor_prior(desc, domain)`` = the sample score on ``domain`` when the descriptor has one,
else its overall probe score, else ``default`` (0.5: no evidence at all).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from routerl.descriptors.model import ModelDescriptor

NO_EVIDENCE_SCORE = 0.5


def descriptor_prior(desc: ModelDescriptor, domain: str | None, default: float = NO_EVIDENCE_SCORE) -> float:
    """Domain sample score, else overall score, else ``default``."""
    if domain and domain in desc.sample_scores:
        return float(desc.sample_scores[domain])
    overall = desc.overall_score()
    return default if overall is None else float(overall)


def descriptor_priors(candidates: Sequence[ModelDescriptor], domain: str | None) -> np.ndarray:
    """``(K,)`` ``descriptor_prior`` of each candidate."""
    return np.array([descriptor_prior(d, domain) for d in candidates], dtype=np.float64)


def shrink(estimate: np.ndarray, count: np.ndarray, prior: np.ndarray, weight: float) -> np.ndarray:
    """``(estimate * count + prior * weight) / (count + weight)``: an evidence mean over ``count``
    results shrunk toward ``prior`` by ``weight`` pseudo-results; ``prior`` where ``count`` is 0.
    All arrays share one shape."""
    est = np.where(count > 0, np.nan_to_num(estimate), 0.0)
    total = count + weight
    return np.where(total > 0, (est * count + prior * weight) / np.where(total > 0, total, 1.0), prior)
