"""Reward terms of a routing episode, each logged separately.

For an episode with calls ``c_1..c_n`` (candidate positions), final answer ``c_n``, knob
``lambda`` and true per-call costs ``cost(c_i)`` in USD:

* ``format``  = ``-format_penalty`` if any turn broke the grammar or no candidate was called,
  else ``0``.
* ``outcome`` = ``score(c_n)`` in [0, 1] (0 when nothing was called).
* ``cost``    = ``-lambda * 1000 * sum_i cost(c_i)``: the knob's unit is score points per dollar
  per 1,000 queries, the same trade-off every router and the cost-aware oracle use
  (``routerl.routers.base.utility``).

``total = format + outcome + cost``. The terms live in a registry (``REWARD_TERMS``) so a
configuration can switch one off (weight 0) or add one without touching the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from routerl.env.episode import Episode
from routerl.routers.base import USD_SCALE

RewardTerm = Callable[[Episode, "RewardConfig"], float]
REWARD_TERMS: dict[str, RewardTerm] = {}


def reward_term(name: str) -> Callable[[RewardTerm], RewardTerm]:
    def wrap(fn: RewardTerm) -> RewardTerm:
        REWARD_TERMS[name] = fn
        return fn

    return wrap


@dataclass
class RewardConfig:
    """``weights``: term name -> multiplier (1 by default); ``format_penalty`` >= 0."""

    format_penalty: float = 1.0
    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format_penalty < 0:
            raise ValueError(f"field 'format_penalty' must be >= 0, got {self.format_penalty}")
        unknown = sorted(set(self.weights) - set(REWARD_TERMS))
        if unknown:
            raise ValueError(f"field 'weights.{unknown[0]}': unknown reward term (known: {', '.join(REWARD_TERMS)})")


@reward_term("format")
def format_term(episode: Episode, config: RewardConfig) -> float:
    return 0.0 if episode.well_formed else -config.format_penalty


@reward_term("outcome")
def outcome_term(episode: Episode, config: RewardConfig) -> float:
    return float(episode.outcome)


@reward_term("cost")
def cost_term(episode: Episode, config: RewardConfig) -> float:
    return -episode.spec.knob * USD_SCALE * episode.cost_usd


def reward_breakdown(episode: Episode, config: RewardConfig | None = None) -> dict[str, float]:
    """Every weighted term by name."""
    config = config or RewardConfig()
    return {name: config.weights.get(name, 1.0) * fn(episode, config) for name, fn in REWARD_TERMS.items()}


def total_reward(episode: Episode, config: RewardConfig | None = None) -> float:
    return float(sum(reward_breakdown(episode, config).values()))
