"""Reference points computed from the outcome table: single models, best single, the oracle.

These are evaluation references, not routers: they read every model's train-split rows (the
protocol's best single = highest train-split accuracy in the pool) and the evaluated prompts'
true outcomes (the cost-aware oracle).

* Single models: priced models with a row on at least 95% of the dataset's prompts.
* A single model's point on a prompt set: where it has no row, the next model down the pool's
  train-accuracy ranking answers (single models first, each group by train accuracy).
* The cost-aware oracle at knob ``k`` calls, per prompt, the pool model maximising
  ``score - k * cost_usd * 1000`` (ties: the cheaper).

Points are ``(accuracy, usd_per_1k)`` means over the prompts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from routerl.data.outcomes import OutcomeTable
from routerl.routers.base import USD_SCALE

SINGLE_MODEL_COVERAGE = 0.95


def train_accuracy(table: OutcomeTable) -> np.ndarray:
    """``(M,)`` each model's mean score on its train-split rows (NaN without rows)."""
    train = table.prompts_in("train")
    have = table.available[train]
    total = np.where(have, table.score[train], 0.0).sum(axis=0)
    count = have.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def single_model_mask(table: OutcomeTable) -> np.ndarray:
    """``(M,)`` bool: the protocol's single models (priced row on >= 95% of prompts)."""
    return table.available.mean(axis=0) >= SINGLE_MODEL_COVERAGE


def ranking(table: OutcomeTable, mask: np.ndarray) -> list[int]:
    """Pool models (``mask``) best first: single models by train accuracy, then the others."""
    acc = np.nan_to_num(train_accuracy(table), nan=-1.0)
    single = single_model_mask(table)
    return sorted(np.flatnonzero(mask).tolist(), key=lambda j: (not single[j], -acc[j], j))


def _first_available(table: OutcomeTable, prompts: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """``(n,)`` per prompt, the first model of ``order`` with a priced row (-1 if none)."""
    have = table.available[np.ix_(prompts, np.asarray(order, dtype=int))]
    pick = np.asarray(order)[np.argmax(have, axis=1)]
    return np.where(have.any(axis=1), pick, -1)


def choice_point(table: OutcomeTable, prompts: np.ndarray, models: np.ndarray) -> tuple[float, float]:
    """``(accuracy, usd_per_1k)`` of calling ``models[n]`` on ``prompts[n]``."""
    if (models < 0).any():
        raise ValueError(f"{table.name}: a prompt has no model in the pool")
    score = table.score[prompts, models].astype(np.float64)
    return float(score.mean()), float(table.cost[prompts, models].astype(np.float64).mean() * USD_SCALE)


def single_model_points(table: OutcomeTable, mask: np.ndarray, prompts: np.ndarray) -> dict[str, tuple[float, float]]:
    """``{model: (accuracy, usd_per_1k)}`` of every single model in the pool, with fallback."""
    order = ranking(table, mask)
    single = single_model_mask(table)
    out = {}
    for pos, j in enumerate(order):
        if single[j]:
            out[table.models[j]] = choice_point(table, prompts, _first_available(table, prompts, order[pos:] + order[:pos]))
    return out


def best_single(table: OutcomeTable, mask: np.ndarray) -> str:
    """The pool's single model with the highest train accuracy."""
    order = ranking(table, mask)
    single = single_model_mask(table)
    for j in order:
        if single[j]:
            return table.models[j]
    raise ValueError(f"{table.name}: the pool has no single model (priced row on >= 95% of prompts)")


def oracle_choices(table: OutcomeTable, mask: np.ndarray, prompts: np.ndarray, knob: float) -> np.ndarray:
    """``(n,)`` the cost-aware oracle's model per prompt at ``knob`` (-1 where the pool is empty)."""
    have = table.available[prompts] & mask[None, :]
    cost = np.where(have, table.cost[prompts], np.inf)
    util = np.where(have, table.score[prompts] - knob * np.where(have, table.cost[prompts], 0.0) * USD_SCALE, -np.inf)
    top = util.max(axis=1, keepdims=True)
    tied = have & (util >= top - 1e-12)
    pick = np.argmin(np.where(tied, cost, np.inf), axis=1)
    return np.where(have.any(axis=1), pick, -1)


def oracle_points(table: OutcomeTable, mask: np.ndarray, prompts: np.ndarray, knobs: Sequence[float]) -> list[tuple[float, float, float]]:
    """``[(knob, accuracy, usd_per_1k)]`` of the cost-aware oracle over a knob sweep."""
    return [(float(k), *choice_point(table, prompts, oracle_choices(table, mask, prompts, float(k)))) for k in knobs]
