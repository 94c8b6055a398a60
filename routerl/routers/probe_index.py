"""The probe prompts a router compares queries with: their ids and sentence embeddings.

A descriptor's ``probe_results`` (probe prompt id -> score) becomes a dense ``(Np,)`` vector over
this index (NaN where the model has no result, or the id is not in the index). Routers read model
evidence only through descriptors: the index holds probe prompt *texts* (embedded), never scores.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from routerl.data.outcomes import OutcomeTable
from routerl.descriptors.model import ModelDescriptor


class ProbeIndex:
    """``prompt_ids`` (Np,), ``embeddings`` (Np, D) unit rows, ``domains`` (Np,)."""

    def __init__(self, prompt_ids: Sequence[str], embeddings: np.ndarray, domains: Sequence[str]):
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(prompt_ids):
            raise ValueError(f"embeddings must be ({len(prompt_ids)}, D), got {embeddings.shape}")
        if not prompt_ids:
            raise ValueError("the probe index is empty: the outcome table has no probe-split prompts")
        self.prompt_ids = list(prompt_ids)
        self.embeddings = embeddings
        self.domains = list(domains)
        self._position = {p: i for i, p in enumerate(self.prompt_ids)}
        # id(descriptor) -> (descriptor, vector); the descriptor is kept so that its id is not reused.
        self._vectors: dict[int, tuple[ModelDescriptor, np.ndarray]] = {}

    @classmethod
    def from_table(cls, table: OutcomeTable, embedder) -> "ProbeIndex":
        """Index the probe split of ``table`` (texts only) with ``embedder``."""
        probe = table.prompts_in("probe")
        texts = [table.prompt_text[i] for i in probe]
        return cls([table.prompt_ids[i] for i in probe], embedder.embed(texts), [table.domain[i] for i in probe])

    @classmethod
    def merge(cls, indices: Sequence["ProbeIndex"]) -> "ProbeIndex":
        """One index over the probe prompts of several indices (ids must not repeat)."""
        ids = [p for ix in indices for p in ix.prompt_ids]
        if len(set(ids)) != len(ids):
            raise ValueError("probe indices share prompt ids; they cannot be merged")
        return cls(ids, np.concatenate([ix.embeddings for ix in indices]), [d for ix in indices for d in ix.domains])

    def save(self, path) -> None:
        """Write ids, embeddings (float16) and domains to an ``.npz`` file (no scores)."""
        np.savez_compressed(
            path,
            prompt_ids=np.array(self.prompt_ids, dtype=str),
            embeddings=self.embeddings.astype(np.float16),
            domains=np.array([d or "" for d in self.domains], dtype=str),
        )

    @classmethod
    def load(cls, path) -> "ProbeIndex":
        with np.load(path, allow_pickle=False) as z:
            emb = z["embeddings"].astype(np.float32)
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            return cls([str(p) for p in z["prompt_ids"]], emb, [str(d) or None for d in z["domains"]])

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def vector(self, desc: ModelDescriptor) -> np.ndarray:
        """``(Np,)`` the descriptor's probe results over the index, NaN where it has none."""
        hit = self._vectors.get(id(desc))
        if hit is not None and hit[0] is desc:
            return hit[1]
        vec = np.full(len(self.prompt_ids), np.nan)
        for pid, score in desc.probe_results.items():
            i = self._position.get(pid)
            if i is not None:
                vec[i] = score
        if len(self._vectors) > 100_000:
            self._vectors.clear()
        self._vectors[id(desc)] = (desc, vec)
        return vec

    def matrix(self, candidates: Sequence[ModelDescriptor]) -> np.ndarray:
        """``(K, Np)`` probe results of each candidate (NaN where missing)."""
        if not candidates:
            return np.zeros((0, len(self.prompt_ids)))
        return np.stack([self.vector(d) for d in candidates])
