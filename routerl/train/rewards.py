"""GRPO reward functions: one per reward term, so TRL logs each separately.

The rollout computes every term of ``routerl.reward.terms`` (already weighted) and passes it as an
extra field (``reward_format``, ``reward_outcome``, ``reward_cost``); each reward function here
just returns its field, and TRL sums them (weights 1) and logs ``rewards/<term>/mean``.

The first function also logs the batch's episode statistics through TRL's ``log_metric``:

* ``episode/format_rate``: share of episodes that followed the grammar and called someone;
* ``episode/accuracy``, ``episode/reward``: mean outcome and total reward;
* ``episode/calls``, ``episode/accept_rate``: mean calls per episode, share ending in ``<accept/>``;
* ``episode/cost_per_1k``: mean USD per 1,000 queries;
* ``route/pos_<k>``: share of calls to candidate position k (1-based);
* ``route/model/<id>``: share of calls to each model.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Sequence

from routerl.reward.terms import REWARD_TERMS
from routerl.train.rollout import REWARD_FIELD


def log_episode_stats(
    log_metric: Callable[[str, float], None], kwargs: dict[str, Any], max_pool: int = 0, models: Sequence[str] = ()
) -> None:
    """Log the batch's statistics; every position up to ``max_pool`` and every model in ``models``
    is logged (0 when not called) so shares average over the same batches."""
    n = len(kwargs["well_formed"])
    log_metric("episode/format_rate", sum(kwargs["well_formed"]) / n)
    log_metric("episode/accuracy", sum(kwargs["outcome"]) / n)
    log_metric("episode/reward", sum(kwargs["reward_total"]) / n)
    log_metric("episode/calls", sum(len(c) for c in kwargs["calls"]) / n)
    log_metric("episode/accept_rate", sum(kwargs["accepted"]) / n)
    log_metric("episode/cost_per_1k", 1000.0 * sum(kwargs["cost_usd"]) / n)
    by_position = Counter(k + 1 for calls in kwargs["calls"] for k in calls)
    by_model = Counter(m for called in kwargs["called_models"] for m in called)
    total = max(sum(by_position.values()), 1)
    for k in sorted(set(range(1, max_pool + 1)) | set(by_position)):
        log_metric(f"route/pos_{k}", by_position.get(k, 0) / total)
    for m in sorted(set(models) | set(by_model)):
        log_metric(f"route/model/{m}", by_model.get(m, 0) / total)


def make_reward_funcs(max_pool: int = 0, models: Sequence[str] = ()) -> list[Callable[..., list[float]]]:
    """One reward function per registered term, named after it; the first also logs the episode
    statistics (``max_pool``, ``models``: the positions and models always reported)."""
    funcs = []
    for i, name in enumerate(REWARD_TERMS):
        key = REWARD_FIELD.format(name)

        def reward(prompts=None, completions=None, _key=key, _first=(i == 0), log_metric=None, **kwargs) -> list[float]:
            if _first and log_metric is not None:
                log_episode_stats(log_metric, kwargs, max_pool, models)
            return [float(v) for v in kwargs[_key]]

        reward.__name__ = name
        funcs.append(reward)
    return funcs
