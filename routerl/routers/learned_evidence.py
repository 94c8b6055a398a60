"""The ``learned`` router as the policy's evidence: one regressor over every training table,
cross-fitted for training episodes, saved as arrays beside the adapter.

In shortlist mode the policy is shown, per candidate, an evidence router's estimate of its score on
this query (``routerl.routers.shortlist``). ``env.evidence.router: learned`` makes that estimate the
``learned`` router's (a gradient-boosted predictor over ``learned_features``: kNN and cluster
results on probe prompts, sample scores, prices), which predicts scores better than ``knn-probe``
alone (docs/results.md). Like every evidence router it reads only descriptors and the query, so a
model registered at run time gets an estimate from its probe results and prices.

Pooled. One probe index over all tables' probe prompts (what ``evidence.npz`` holds), one k-means
over it (``n_clusters``, default 10 per table) and one regressor fit on every table's seen-model
train rows, its iteration count chosen on their val rows: the router the served policy uses.

Cross-fitted. Training episodes are built on train prompts, which the regressor was fit on, so its
estimates there would be better than on any new query, and the warm start would learn to trust
them too much. The train prompts are split into ``folds`` (seeded); a train prompt's estimate
comes from a regressor fit without its fold. Every other query (val, test, a live request) gets
the full regressor. Selecting by ``Query.prompt_id`` is a training-time device only: the saved
router has the full regressor and nothing else.

Saved as ``LEARNED_FILE``: the trees (``TreeEnsemble`` arrays), the descriptor model's trees
(``DESCRIPTOR_PREFIX``; it scores candidates without probe results, see ``routerl.routers.learned``;
a file saved before it has none, and its router scores them with the main trees), the clusters
(labels and centroids), ``k``, ``k_wide`` and the feature names; no pickle, no outcome.
``python -m routerl.train.ship CHECKPOINT --descriptor-model`` adds the descriptor model to a
checkpoint's file, leaving every other array as it was.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from routerl.data.outcomes import OutcomeTable
from routerl.data.splits import Splits
from routerl.routers.base import Query
from routerl.routers.cluster_probe import DEFAULT_CLUSTERS, ProbeClusters
from routerl.routers.learned import LEARNED_DEFAULTS, LearnedRouter, fit_descriptor_model, fit_regressor, seen_descriptors, seen_model_pairs
from routerl.routers.learned_features import FEATURE_NAMES, PairFeatures
from routerl.routers.probe_index import ProbeIndex
from routerl.routers.tree_ensemble import TreeEnsemble

log = logging.getLogger(__name__)
LEARNED_FILE = "learned.npz"
DESCRIPTOR_PREFIX = "descriptor_tree_"  # the descriptor model's arrays in LEARNED_FILE (absent in files saved before it)
EVIDENCE_OPTIONS = ("k", "k_wide", "n_clusters", "max_iter", "learning_rate", "folds")


class CrossFitLearnedRouter(LearnedRouter):
    """``LearnedRouter`` whose estimate for a train prompt comes from the regressor fit without
    that prompt's fold (``fold_models[fold_of[prompt_id]]``); other queries get ``model``."""

    def __init__(self, index, embedder, features, model, fold_models: Sequence, fold_of: dict[str, int], info: dict | None = None,
                 descriptor_model: TreeEnsemble | None = None):
        super().__init__(index, embedder, features, model, info, descriptor_model)
        self.fold_models = list(fold_models)
        self.fold_of = dict(fold_of)

    def model_for(self, query: Query):
        return self._model_for_id(query.prompt_id)

    def _model_for_id(self, prompt_id: str | None):
        fold = self.fold_of.get(prompt_id) if prompt_id is not None else None
        return self.model if fold is None else self.fold_models[fold]

    def predict_rows(self, x: np.ndarray, prompt_ids: Sequence[str]) -> np.ndarray:
        """Estimates in [0, 1] of feature rows ``x`` ``(n, F)``, row i by the regressor for
        ``prompt_ids[i]`` (``model_for``'s choice), ``(n,)``: many prompts in one pass per model."""
        out = np.empty(len(x))
        models = [self._model_for_id(pid) for pid in prompt_ids]
        for model in {id(m): m for m in models}.values():
            rows = np.array([m is model for m in models], dtype=bool)
            out[rows] = self.scores(model, x[rows])
        return out

    def serving(self) -> LearnedRouter:
        """The router serving uses: the full regressor, no folds."""
        return LearnedRouter(self.index, self.embedder, self.features, self.model, self.info, self.descriptor_model)


def fit_pooled_evidence(
    sources: Sequence[tuple[OutcomeTable, Splits | None]],
    embedder,
    *,
    k: int = LEARNED_DEFAULTS["k"],
    k_wide: int = LEARNED_DEFAULTS["k_wide"],
    n_clusters: int | None = None,
    max_iter: int = LEARNED_DEFAULTS["max_iter"],
    learning_rate: float = LEARNED_DEFAULTS["learning_rate"],
    folds: int = 2,
    seed: int = 0,
) -> CrossFitLearnedRouter:
    """Fit the pooled, cross-fitted evidence router on ``sources`` (table, splits) pairs: see the
    module docstring. Reads only seen, priced models' train and val rows."""
    if not sources:
        raise ValueError("the learned evidence router needs at least one outcome table")
    if int(folds) < 2:
        raise ValueError(f"option 'folds' must be at least 2, got {folds}")
    index = ProbeIndex.merge([ProbeIndex.from_table(table, embedder) for table, _ in sources])
    clusters = ProbeClusters(index, n_clusters or DEFAULT_CLUSTERS * len(sources), seed)
    features = PairFeatures(index, clusters, k=k, k_wide=k_wide)
    rng = np.random.default_rng(seed)
    train, val, fold_of = [], [], {}
    for table, splits in sources:
        descriptors = seen_descriptors(table, splits)
        x, y, rows = seen_model_pairs(table, splits, "train", descriptors, features, embedder, with_prompts=True)
        prompts = table.prompts_in("train")
        fold = np.empty(len(table.prompt_ids), dtype=int)
        fold[prompts] = rng.permutation(len(prompts)) % int(folds)
        fold_of.update({table.prompt_ids[i]: int(fold[i]) for i in prompts})
        train.append((x, y, fold[rows]))
        val.append(seen_model_pairs(table, splits, "val", descriptors, features, embedder))
    x_tr, y_tr, f_tr = (np.concatenate(parts) for parts in zip(*train))
    x_va, y_va = (np.concatenate(parts) for parts in zip(*val))
    if len(y_tr) < 10 * int(folds):
        raise ValueError(f"too few seen-model train rows to fit the learned evidence router ({len(y_tr)})")
    hyper = dict(max_iter=max_iter, learning_rate=learning_rate, seed=seed)
    full, info = fit_regressor(x_tr, y_tr, x_va, y_va, **hyper)
    fold_models = []
    for f in range(int(folds)):
        keep = f_tr != f
        model, fold_info = fit_regressor(x_tr[keep], y_tr[keep], x_va, y_va, **hyper)
        fold_models.append(TreeEnsemble.from_sklearn(model))
        info[f"fold{f}_iterations"] = fold_info["iterations"]
    info.update(tables=[table.name for table, _ in sources], folds=int(folds), probe_prompts=len(index))
    descriptor_model, info["descriptor_model"] = fit_descriptor_model(x_tr, y_tr, x_va, y_va, **hyper)
    log.info("learned evidence router: %s", info)
    return CrossFitLearnedRouter(index, embedder, features, TreeEnsemble.from_sklearn(full), fold_models, fold_of, info, descriptor_model)


def save_learned(router: LearnedRouter, path: str | Path) -> None:
    """Write ``router``'s regressor (a ``TreeEnsemble``), clusters and feature settings to ``path``
    (the full regressor of a ``CrossFitLearnedRouter``; its probe index goes to ``evidence.npz``)."""
    f = router.features
    np.savez_compressed(
        path,
        **router.model.arrays("tree_"),
        **(router.descriptor_model.arrays(DESCRIPTOR_PREFIX) if router.descriptor_model is not None else {}),
        cluster_labels=f.clusters.labels,
        cluster_centroids=f.clusters.centroids,
        k=np.array(f.k),
        k_wide=np.array(f.k_wide),
        feature_names=np.array(FEATURE_NAMES, dtype=str),
        probe_prompts=np.array(len(router.index)),
    )


def load_learned(path: str | Path, index: ProbeIndex, embedder) -> LearnedRouter:
    """The router ``save_learned`` wrote, over ``index`` (the ``evidence.npz`` saved with it)."""
    with np.load(path, allow_pickle=False) as z:
        names = tuple(str(n) for n in z["feature_names"])
        if names != FEATURE_NAMES:
            raise ValueError(f"{path}: saved for features {names}, this version computes {FEATURE_NAMES}")
        if int(z["probe_prompts"]) != len(index):
            raise ValueError(f"{path}: saved for {int(z['probe_prompts'])} probe prompts, the index has {len(index)}")
        model = TreeEnsemble.from_arrays(z, "tree_")
        descriptor_model = TreeEnsemble.from_arrays(z, DESCRIPTOR_PREFIX) if DESCRIPTOR_PREFIX + "baseline" in z.files else None
        clusters = ProbeClusters.from_arrays(z["cluster_labels"], z["cluster_centroids"])
        features = PairFeatures(index, clusters, k=int(z["k"]), k_wide=int(z["k_wide"]))
    return LearnedRouter(index, embedder, features, model, descriptor_model=descriptor_model)
