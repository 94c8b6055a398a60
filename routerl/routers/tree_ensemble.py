"""A fitted gradient-boosted regressor as plain arrays: saved without pickle, evaluated with numpy.

The served policy's ``learned`` evidence must load on a fresh install from files in the package,
whatever scikit-learn version is installed there, so the trees of a fitted
``HistGradientBoostingRegressor`` are exported to arrays (``TreeEnsemble.from_sklearn``), written
into an ``.npz`` (``arrays``/``from_arrays``, read with ``allow_pickle=False``) and evaluated level
by level for all trees at once (``predict``): the same numbers as ``model.predict`` (tests compare
them), in numpy, with no OpenMP region per request. Every ``LearnedRouter`` predicts with one.

Node rule (scikit-learn's, numeric features only): a missing value (NaN) goes to the side the node
learned for missing values; otherwise ``x <= threshold`` goes left.
"""

from __future__ import annotations

import numpy as np

_ARRAYS = ("feature", "threshold", "missing_left", "left", "right", "leaf", "value")


class TreeEnsemble:
    """``T`` trees padded to ``M`` nodes each: every array is ``(T, M)``; ``baseline`` is the
    constant the trees' leaf values add to; ``depth`` is the deepest leaf's depth."""

    def __init__(self, feature, threshold, missing_left, left, right, leaf, value, baseline: float, n_features: int):
        self.feature = np.asarray(feature, dtype=np.int64)
        self.threshold = np.asarray(threshold, dtype=np.float64)
        self.missing_left = np.asarray(missing_left, dtype=bool)
        self.left = np.asarray(left, dtype=np.int64)
        self.right = np.asarray(right, dtype=np.int64)
        self.leaf = np.asarray(leaf, dtype=bool)
        self.value = np.asarray(value, dtype=np.float64)
        self.baseline = float(baseline)
        self.n_features = int(n_features)
        shapes = {getattr(self, name).shape for name in _ARRAYS}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"tree arrays must share one (T, M) shape, got {sorted(shapes)}")
        T, M = self.feature.shape
        inner = ~self.leaf
        if (self.left[inner] >= M).any() or (self.right[inner] >= M).any() or (self.feature[inner] >= self.n_features).any():
            raise ValueError("tree arrays point outside the trees or the features")
        self.depth = _depth(self.left, self.right, self.leaf)

    @classmethod
    def from_sklearn(cls, model) -> "TreeEnsemble":
        """Export a fitted single-output ``HistGradientBoostingRegressor`` (numeric features)."""
        predictors = [trees[0] for trees in model._predictors]
        nodes = [p.nodes for p in predictors]
        if any(n["is_categorical"].any() for n in nodes):
            raise ValueError("categorical splits are not supported")
        T, M = len(nodes), max((len(n) for n in nodes), default=1)
        out = {name: np.zeros((T, M), dtype=np.float64 if name in ("threshold", "value") else np.int64) for name in _ARRAYS}
        out["leaf"] = np.ones((T, M), dtype=bool)  # padding: leaves of value 0, never reached
        for t, n in enumerate(nodes):
            m = len(n)
            out["feature"][t, :m] = n["feature_idx"]
            out["threshold"][t, :m] = n["num_threshold"]
            out["missing_left"][t, :m] = n["missing_go_to_left"]
            out["left"][t, :m] = n["left"]
            out["right"][t, :m] = n["right"]
            out["leaf"][t, :m] = n["is_leaf"].astype(bool)
            out["value"][t, :m] = n["value"]
        baseline = float(np.ravel(model._baseline_prediction)[0])
        return cls(**out, baseline=baseline, n_features=model.n_features_in_)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(N,)`` predictions for ``(N, F)`` features (NaN = missing)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"features must be (N, {self.n_features}), got {x.shape}")
        T, N = self.feature.shape[0], x.shape[0]
        rows = np.arange(T)[:, None]
        node = np.zeros((T, N), dtype=np.int64)
        cols = np.arange(N)[None, :]
        for _ in range(self.depth):
            at_leaf = self.leaf[rows, node]
            if at_leaf.all():
                break
            v = x[cols, self.feature[rows, node]]  # (T, N)
            go_left = np.where(np.isnan(v), self.missing_left[rows, node], v <= self.threshold[rows, node])
            node = np.where(at_leaf, node, np.where(go_left, self.left[rows, node], self.right[rows, node]))
        return self.baseline + self.value[rows, node].sum(axis=0)

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The arrays to save (names prefixed), for ``np.savez`` alongside other arrays."""
        out = {prefix + name: getattr(self, name) for name in _ARRAYS}
        out[prefix + "baseline"] = np.array(self.baseline)
        out[prefix + "n_features"] = np.array(self.n_features)
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str = "") -> "TreeEnsemble":
        """The inverse of ``arrays`` (``arrays``: a mapping such as an open ``np.load`` file)."""
        try:
            kwargs = {name: arrays[prefix + name] for name in _ARRAYS}
            return cls(**kwargs, baseline=float(arrays[prefix + "baseline"]), n_features=int(arrays[prefix + "n_features"]))
        except KeyError as e:
            raise ValueError(f"tree ensemble arrays are incomplete: {e.args[0]!r} is missing") from None


def _depth(left: np.ndarray, right: np.ndarray, leaf: np.ndarray) -> int:
    """The number of steps from the root to the deepest leaf, over all trees."""
    T = left.shape[0]
    rows = np.arange(T)
    frontier = [(rows, np.zeros(T, dtype=np.int64))]
    depth = 0
    while True:
        nxt = []
        for t, n in frontier:
            inner = ~leaf[t, n]
            if inner.any():
                t, n = t[inner], n[inner]
                nxt.append((np.concatenate([t, t]), np.concatenate([left[t, n], right[t, n]])))
        if not nxt:
            return depth
        depth += 1
        if depth > left.shape[1]:
            raise ValueError("tree arrays contain a cycle")
        frontier = nxt
