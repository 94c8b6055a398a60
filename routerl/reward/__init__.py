"""Reward terms for routing episodes (see ``routerl.reward.terms``)."""

from routerl.reward.terms import REWARD_TERMS, RewardConfig, reward_breakdown, total_reward

__all__ = ["REWARD_TERMS", "RewardConfig", "reward_breakdown", "total_reward"]
