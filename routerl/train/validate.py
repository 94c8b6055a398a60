"""Score a policy on a fixed set of episodes (the periodic validation metric and the learning test).

``evaluate_policy`` plays copies of the episodes with the current weights and returns means:
``reward`` (total), each reward term, ``accuracy`` (outcome), ``cost_per_1k`` (USD per 1,000
queries), ``calls`` and ``format_rate``. ``mode='think'`` generates turns as the rollout does
(greedy by default, or sampled with a fixed seed: the policy's expected reward); ``mode='fast'``
acts by the fast-mode argmax every turn (always well formed).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from routerl.env import Episode
from routerl.env.actions import format_accept, format_route
from routerl.policy.prompt import encode, episode_prompt
from routerl.policy.router import PolicyConfig
from routerl.policy.scoring import action_options, score_actions
from routerl.reward.terms import RewardConfig, reward_breakdown
from routerl.train.episodes import fresh
from routerl.train.rollout import play


def _fast_play(model, tokenizer, episode: Episode, prompt_ids: list[int]) -> None:
    context = list(prompt_ids)
    while not episode.done:
        options = action_options(len(episode.spec.pool), episode.calls, allow_accept=bool(episode.calls))
        best = options[int(torch.argmax(score_actions(model, tokenizer, context, options)))]
        text = format_accept() if best.is_accept else format_route(best.index)
        result = episode.step(text)
        context += encode(tokenizer, text)
        if result.info:
            context += encode(tokenizer, result.info)


@torch.no_grad()
def evaluate_policy(
    model,
    tokenizer,
    episodes: Sequence[Episode],
    policy: PolicyConfig,
    reward: RewardConfig | None = None,
    *,
    mode: str = "think",
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, float]:
    """Mean metrics of ``model`` on unplayed copies of ``episodes`` (see the module docstring)."""
    reward = reward or RewardConfig()
    games = [fresh(e) for e in episodes]
    prompts = [encode(tokenizer, episode_prompt(tokenizer, e.spec, max_query_chars=policy.max_query_chars)) for e in games]
    was_training = model.training
    model.eval()
    try:
        if mode == "fast":
            for g, p in zip(games, prompts):
                _fast_play(model, tokenizer, g, p)
        else:
            state = torch.random.get_rng_state()
            torch.manual_seed(seed)
            try:
                for s in range(0, len(games), batch_size):
                    play(
                        model, tokenizer, games[s : s + batch_size], prompts[s : s + batch_size],
                        policy.think_budget + policy.action_tokens, do_sample=do_sample, temperature=temperature,
                    )  # fmt: skip
            finally:
                torch.random.set_rng_state(state)
    finally:
        model.train(was_training)
    terms = [reward_breakdown(g, reward) for g in games]
    out = {f"reward_{k}": float(np.mean([t[k] for t in terms])) for k in terms[0]}
    out["reward"] = float(np.mean([sum(t.values()) for t in terms]))
    out["accuracy"] = float(np.mean([g.outcome for g in games]))
    out["cost_per_1k"] = float(1000 * np.mean([g.cost_usd for g in games]))
    out["calls"] = float(np.mean([len(g.calls) for g in games]))
    out["format_rate"] = float(np.mean([g.well_formed for g in games]))
    return out
