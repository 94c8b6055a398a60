"""``learned``: a gradient-boosted predictor of a candidate's score from descriptor evidence.

Features per (query, candidate) are ``learned_features.FEATURE_NAMES`` (kNN and cluster estimates
from probe results, domain/overall sample scores, log prices and estimated cost, ...): the same
evidence the policy reads, so the predictor applies to unseen models through their descriptors.

Fitting reads only *seen* models' rows: targets are their scores on the table's train prompts;
their val prompts choose the number of boosting iterations (lowest val squared error). Unseen
models' rows and all test rows are never read. Descriptors used for the features are built from
probe rows, as at evaluation time.

Defaults (``LEARNED_DEFAULTS``): the kNN feature at k=10 and k_wide=40 (knn-probe's k), the
cluster feature at knn-probe's val-chosen 10 clusters, up to 300 boosting iterations at learning
rate 0.05 (the count is picked on val).

Candidates without probe results. Every model the regressor is fit on has probe results, so a
descriptor with per-domain sample scores only (a model registered at run time without a probe
run) would reach it with the kNN and cluster features missing, a case it never saw: its estimate
was pulled toward the middle whatever its sample scores said. A second regressor, the
*descriptor model*, is fit on the same rows with only ``DESCRIPTOR_FEATURES`` (sample scores,
counts, prices, cost, token counts) and scores every pair without probe evidence
(``LearnedRouter.scores``); pairs with probe results are scored by the main regressor as before.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor

from routerl.data.outcomes import OutcomeTable
from routerl.data.splits import Splits
from routerl.descriptors.build import build_descriptors
from routerl.descriptors.model import ModelDescriptor
from routerl.routers.base import Query
from routerl.routers.cluster_probe import DEFAULT_CLUSTERS, ProbeClusters
from routerl.routers.knn_probe import DEFAULT_K as KNN_PROBE_K
from routerl.routers.learned_features import DESCRIPTOR_COLUMNS, FEATURE_NAMES, PairFeatures, descriptor_features, has_probe_evidence
from routerl.routers.probe_index import ProbeIndex
from routerl.routers.probe_router import ProbeRouter
from routerl.routers.recorded import query_tokens
from routerl.routers.threads import single_thread
from routerl.routers.tree_ensemble import TreeEnsemble

log = logging.getLogger(__name__)
LEARNED_DEFAULTS = {"k": 10, "k_wide": KNN_PROBE_K, "n_clusters": DEFAULT_CLUSTERS, "max_iter": 300, "learning_rate": 0.05}


def seen_model_pairs(
    table: OutcomeTable,
    splits: Splits | None,
    split: str,
    descriptors: dict[str, ModelDescriptor],
    features: PairFeatures | None,
    embedder,
    *,
    with_prompts: bool = False,
    with_models: bool = False,
):
    """Features and targets of every (prompt in ``split``, seen model with a row) pair.

    Returns ``(X, y)``: ``(n, F)`` features and ``(n,)`` true scores; with ``with_prompts``, also
    ``(n,)`` the table's prompt row of each pair, and with ``with_models`` its model column. Only models in ``descriptors`` are read, and
    each must be a seen model (else ValueError). With ``features`` None, only the
    ``DESCRIPTOR_COLUMNS`` are filled (NaN elsewhere) and nothing is embedded (``embedder`` unused):
    the rows the descriptor model is fit on.
    """
    seen = table.seen_mask(splits)
    prompts = table.prompts_in(split)
    extra = (np.zeros(0, dtype=int),) * (int(with_prompts) + int(with_models))
    empty = (np.zeros((0, len(FEATURE_NAMES))), np.zeros(0)) + extra
    if prompts.size == 0:
        return empty
    emb = embedder.embed([table.prompt_text[i] for i in prompts]) if features is not None else None
    tokens = query_tokens(table, prompts)
    domains = [table.domain[i] for i in prompts]
    available = table.available[prompts]
    xs, ys, rows, cols = [], [], [], []
    for model, desc in descriptors.items():
        j = table.model_index(model)
        if not seen[j]:
            raise ValueError(f"model {model!r} is not a seen model: its rows may not be used for fitting")
        have = available[:, j]
        if not have.any():
            continue
        idx = np.flatnonzero(have)
        doms = [domains[n] for n in idx]
        x = features.build(emb[idx], doms, tokens[idx], [desc]) if features is not None else descriptor_features(doms, tokens[idx], [desc])
        xs.append(x[:, 0, :])
        ys.append(table.score[prompts[idx], j].astype(np.float64))
        rows.append(prompts[idx])
        cols.append(np.full(idx.size, j))
    if not xs:
        return empty
    out = (np.concatenate(xs), np.concatenate(ys))
    if with_prompts:
        out += (np.concatenate(rows),)
    if with_models:
        out += (np.concatenate(cols),)
    return out


def seen_descriptors(table: OutcomeTable, splits: Splits | None) -> dict[str, ModelDescriptor]:
    """Descriptors (from probe rows) of the table's seen, priced models: the models fitting may read."""
    seen = table.seen_mask(splits)
    return build_descriptors(table, [m for j, m in enumerate(table.models) if seen[j] and table.priced[j]])


class LearnedRouter(ProbeRouter):
    """Score = a fitted regressor (a ``TreeEnsemble``) over ``PairFeatures`` of (query, candidate);
    ``descriptor_model`` (over ``DESCRIPTOR_COLUMNS``) scores candidates without probe results
    (None: the main regressor scores them too, with their probe features missing)."""

    name = "learned"

    def __init__(self, index: ProbeIndex, embedder, features: PairFeatures, model: TreeEnsemble, info: dict | None = None,
                 descriptor_model: TreeEnsemble | None = None):
        super().__init__(index, embedder)
        self.features = features
        self.model = model
        self.info = dict(info or {})
        self.descriptor_model = descriptor_model

    def model_for(self, query: Query):
        """The regressor that scores ``query`` (one for all here; see ``learned_evidence``)."""
        return self.model

    def predict(self, query: Query, candidates: Sequence[ModelDescriptor]) -> np.ndarray:
        embedding = self.query_embedding(query)[None, :]
        with single_thread("blas"):  # the kNN and cluster similarities: a few small matrix products
            x = self.features.build(embedding, [query.domain], np.array([query.tokens]), candidates)[0]
        return self.scores(self.model_for(query), x)

    def scores(self, model: TreeEnsemble, x: np.ndarray) -> np.ndarray:
        """``(n,)`` estimates in [0, 1] of ``(n, F)`` feature rows: ``model``'s where probe results
        stand behind a row, the descriptor model's elsewhere (numpy trees: no thread pool)."""
        out = np.asarray(model.predict(x), dtype=np.float64)
        bare = ~has_probe_evidence(x)
        if self.descriptor_model is not None and bare.any():
            out = out.copy()
            out[bare] = self.descriptor_model.predict(x[bare][:, DESCRIPTOR_COLUMNS])
        return np.clip(out, 0.0, 1.0)


def fit_learned_router(
    table: OutcomeTable,
    splits: Splits | None,
    embedder,
    *,
    k: int = LEARNED_DEFAULTS["k"],
    k_wide: int = LEARNED_DEFAULTS["k_wide"],
    n_clusters: int = LEARNED_DEFAULTS["n_clusters"],
    max_iter: int = LEARNED_DEFAULTS["max_iter"],
    learning_rate: float = LEARNED_DEFAULTS["learning_rate"],
    seed: int = 0,
    descriptor_model: bool = True,
) -> LearnedRouter:
    """Fit on seen models' train rows; pick the iteration count on their val rows. With
    ``descriptor_model``, also fit the descriptor model (candidates without probe results)."""
    if table is None:
        raise ValueError("the learned router needs an outcome table to fit on")
    index = ProbeIndex.from_table(table, embedder)
    features = PairFeatures(index, ProbeClusters(index, n_clusters, seed), k=k, k_wide=k_wide)
    descriptors = seen_descriptors(table, splits)
    x_tr, y_tr = seen_model_pairs(table, splits, "train", descriptors, features, embedder)
    x_va, y_va = seen_model_pairs(table, splits, "val", descriptors, features, embedder)
    if len(y_tr) < 10:
        raise ValueError(f"{table.name}: too few seen-model train rows to fit the learned router ({len(y_tr)})")
    model, info = fit_regressor(x_tr, y_tr, x_va, y_va, max_iter=max_iter, learning_rate=learning_rate, seed=seed)
    trees = None
    if descriptor_model:
        trees, info["descriptor_model"] = fit_descriptor_model(x_tr, y_tr, x_va, y_va, max_iter=max_iter, learning_rate=learning_rate, seed=seed)
    log.info("learned router on %s: %s", table.name, info)
    return LearnedRouter(index, embedder, features, TreeEnsemble.from_sklearn(model), info, trees)


def fit_descriptor_model(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    *,
    max_iter: int = LEARNED_DEFAULTS["max_iter"],
    learning_rate: float = LEARNED_DEFAULTS["learning_rate"],
    seed: int = 0,
) -> tuple[TreeEnsemble, dict]:
    """The descriptor model (see the module docstring): ``fit_regressor`` over the
    ``DESCRIPTOR_COLUMNS`` of the main regressor's ``(n, F)`` train and val rows (or of rows
    ``seen_model_pairs`` built without ``features``). Returns the trees and the fit's info."""
    if len(y_tr) < 10:
        raise ValueError(f"too few seen-model train rows to fit the descriptor model ({len(y_tr)})")
    columns = list(DESCRIPTOR_COLUMNS)
    model, info = fit_regressor(x_tr[:, columns], y_tr, x_va[:, columns], y_va, max_iter=max_iter, learning_rate=learning_rate, seed=seed)
    return TreeEnsemble.from_sklearn(model), info


def fit_regressor(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_va: np.ndarray,
    y_va: np.ndarray,
    *,
    max_iter: int = LEARNED_DEFAULTS["max_iter"],
    learning_rate: float = LEARNED_DEFAULTS["learning_rate"],
    seed: int = 0,
) -> tuple[HistGradientBoostingRegressor, dict]:
    """The learned router's regressor fit on ``(x_tr, y_tr)``, its iteration count chosen by the
    squared error on ``(x_va, y_va)`` (all ``max_iter`` when there are no val rows). Returns the
    model and ``info`` (row counts, iterations, val MSE and the variance it compares with)."""

    def regressor(iterations: int) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            max_iter=iterations,
            learning_rate=learning_rate,
            max_leaf_nodes=31,
            min_samples_leaf=40,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=seed,
        )

    model = regressor(int(max_iter)).fit(x_tr, y_tr)
    info = {"train_rows": int(len(y_tr)), "val_rows": int(len(y_va)), "iterations": int(max_iter)}
    if len(y_va):
        mse = [float(np.mean((np.clip(p, 0, 1) - y_va) ** 2)) for p in model.staged_predict(x_va)]
        best = int(np.argmin(mse)) + 1
        info.update(iterations=best, val_mse=round(mse[best - 1], 5), val_mse_base=round(float(np.var(y_va)), 5))
        if best < int(max_iter):
            model = regressor(best).fit(x_tr, y_tr)
    return model, info
