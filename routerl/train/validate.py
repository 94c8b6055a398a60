"""Score a policy on a fixed set of episodes (the periodic validation metric and the learning test).

``evaluate_policy`` plays copies of the episodes with the current weights and returns means:
``reward`` (total), each reward term, ``accuracy`` (outcome), ``cost_per_1k`` (USD per 1,000
queries), ``calls`` and ``format_rate``. ``mode='think'`` generates turns as the rollout does
(greedy by default, or sampled with a fixed seed: the policy's expected reward); ``mode='fast'``
acts by the fast-mode argmax every turn (always well formed).

``knob_sweep_aiq`` replays the same episodes in fast mode at several cost knobs and returns the
protocol's AIQ of the resulting (cost, accuracy) points, with the cost range set by always calling
each episode's most expensive candidate (the validation pools are random subsets, so the
protocol's "most expensive single model" is replaced by that per-pool equivalent).

Fast mode runs the tokens every prompt starts with (the system message) once per call, and each
turn continues the state kept from the turn before: a turn runs only its new tokens and the action
trie in one pass (``packed_logprobs_many``), where recomputing the whole context every turn cost
several times more (``python -m routerl.bench.validation`` prints the ratio). The scores are the
actions' full sequence log-likelihoods, as ``score_actions`` computes them, within float rounding.
"""

from __future__ import annotations

from typing import Sequence

import dataclasses

import numpy as np
import torch

from routerl.env import Episode
from routerl.env.actions import format_accept, format_route
from routerl.eval.frontier import aiq
from routerl.policy.prompt import encode, episode_prompt
from routerl.policy.router import PolicyConfig
from routerl.policy.scoring import ContextState, action_options, common_prefix_len, packed_logprobs_many, run_context
from routerl.reward.terms import RewardConfig, reward_breakdown
from routerl.train.episodes import fresh
from routerl.train.rollout import play


def _shared_state(model, prompts: Sequence[Sequence[int]]) -> ContextState | None:
    """The state after the tokens every prompt starts with (leaving each at least one token of its
    own), or None when they share none."""
    if not prompts:
        return None
    n = min(common_prefix_len(prompts), min(len(p) for p in prompts) - 1)
    return run_context(model, prompts[0][:n]) if n > 0 else None


def _fast_play(model, tokenizer, episode: Episode, prompt_ids: Sequence[int], shared: ContextState | None = None) -> None:
    """Play ``episode`` by the fast-mode argmax every turn. ``shared``: the state after a prefix of
    ``prompt_ids`` (``_shared_state``); each turn continues the state kept by the turn before."""
    state, suffix = shared, list(prompt_ids[shared.length :] if shared is not None else prompt_ids)
    while not episode.done:
        options = action_options(len(episode.spec.pool), episode.calls, allow_accept=bool(episode.calls))
        conts = [encode(tokenizer, o.text) for o in options]
        kept: list = []
        logp = packed_logprobs_many(model, state, [(suffix, conts)], kept=kept)[0]
        best = options[int(torch.argmax(logp))]
        text = format_accept() if best.is_accept else format_route(best.index)
        result = episode.step(text)
        state = kept[0] if kept[0] is not None else state
        suffix = encode(tokenizer, text) + (encode(tokenizer, result.info) if result.info else [])


def _play_fast(model, tokenizer, games: Sequence[Episode], policy: PolicyConfig) -> None:
    """Play every game in fast mode (see the module docstring)."""
    prompts = [_prompt_ids(tokenizer, g, policy) for g in games]
    shared = _shared_state(model, prompts)
    for g, p in zip(games, prompts):
        _fast_play(model, tokenizer, g, p, shared)


def _prompt_ids(tokenizer, episode: Episode, policy: PolicyConfig) -> list[int]:
    return encode(tokenizer, episode_prompt(tokenizer, episode.spec, max_query_chars=policy.max_query_chars, style=policy.prompt_style))


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
    was_training = model.training
    model.eval()
    try:
        if mode == "fast":
            _play_fast(model, tokenizer, games, policy)
        else:
            prompts = [_prompt_ids(tokenizer, g, policy) for g in games]
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


@torch.no_grad()
def knob_sweep_aiq(model, tokenizer, episodes: Sequence[Episode], policy: PolicyConfig, knobs: Sequence[float]) -> float:
    """Validation AIQ of fast-mode decisions on ``episodes`` replayed at each of ``knobs``."""
    if not episodes or not knobs:
        raise ValueError("knob_sweep_aiq needs episodes and knobs")
    was_training = model.training
    model.eval()
    sweep = knob_sweep(episodes, knobs)
    try:
        _play_fast(model, tokenizer, [g for games in sweep for g in games], policy)
    finally:
        model.train(was_training)
    return sweep_aiq(sweep, episodes)


def knob_sweep(episodes: Sequence[Episode], knobs: Sequence[float]) -> list[list[Episode]]:
    """Unplayed copies of ``episodes`` at each of ``knobs``: one list per knob."""
    return [[fresh(dataclasses.replace(e, spec=dataclasses.replace(e.spec, knob=float(knob)))) for e in episodes] for knob in knobs]


def sweep_aiq(sweep: Sequence[Sequence[Episode]], episodes: Sequence[Episode]) -> float:
    """The AIQ of a played ``knob_sweep`` (one mean cost and accuracy point per knob), with the cost
    range of always calling each of ``episodes``' most expensive candidate."""
    costs = [float(np.mean([g.cost_usd for g in games])) for games in sweep]
    accuracies = [float(np.mean([g.outcome for g in games])) for games in sweep]
    c_max = float(np.mean([max(e.costs) for e in episodes]))
    return float(aiq(costs, accuracies, c_max))
