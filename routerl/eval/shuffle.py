"""The shuffle control: unseen models' descriptors permuted among themselves.

Each unseen model keeps its id, prices and typical output length (what it costs), but receives
another unseen model's quality evidence (``sample_scores``, ``sample_counts``,
``probe_results``). The permutation is a seeded derangement: no model keeps its own evidence.
A router that really reads descriptors should lose most of its UnseenCapture under it.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from routerl.descriptors.model import ModelDescriptor


def shuffle_unseen_descriptors(
    descriptors: dict[str, ModelDescriptor], unseen: Iterable[str], seed: int = 0
) -> dict[str, ModelDescriptor]:
    """A copy of ``descriptors`` whose unseen models' evidence is deranged (fewer than two
    unseen models: returned unchanged)."""
    ids = sorted(m for m in set(unseen) if m in descriptors)
    out = dict(descriptors)
    if len(ids) < 2:
        return out
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    for n, model in enumerate(order):
        donor = descriptors[order[(n + 1) % len(order)]]
        out[model] = descriptors[model].with_changes(
            sample_scores=dict(donor.sample_scores),
            sample_counts=dict(donor.sample_counts),
            probe_results=dict(donor.probe_results),
        )
    return out
