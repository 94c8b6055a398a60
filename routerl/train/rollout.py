"""Multi-round rollouts over the routing environment, as TRL's ``rollout_func``.

One rollout plays one episode to its end. Its completion is the concatenation of the policy's
turns and the environment's ``<info>`` blocks::

    completion_ids = turn_1 | info_1 | turn_2 | ... | [eos]
    env_mask       =   1    |   0    |   1    | ... |  0

``env_mask`` (TRL's ``tool_mask``) is 1 on tokens the policy sampled and 0 on tokens the
environment wrote, so GRPO's loss (``completion_mask * env_mask``) never trains on ``<info>``
text. The end-of-turn token is appended (masked) when the episode ended with a complete action,
so TRL's ``completions/clipped_ratio`` counts turns cut by the token budget.

Each turn is generated for all still-running episodes at once (left-padded batch); a turn ends
after its action closes, at end-of-turn, or after ``think_budget + action_tokens`` tokens. The
episode's reward terms and statistics travel to the reward functions as extra fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from routerl.env import Episode
from routerl.env.actions import INFO_CLOSE
from routerl.policy.decoding import generate_turns
from routerl.policy.prompt import encode
from routerl.policy.router import PolicyConfig
from routerl.reward.terms import RewardConfig, reward_breakdown

REWARD_FIELD = "reward_{}"  # extra field carrying each reward term, e.g. reward_format


@dataclass
class Played:
    """One finished rollout. ``completion_ids`` and ``env_mask`` have equal length."""

    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)

    def add(self, ids: Sequence[int], policy: bool) -> None:
        self.completion_ids.extend(int(i) for i in ids)
        self.env_mask.extend([1 if policy else 0] * len(ids))


def play(
    model,
    tokenizer,
    episodes: Sequence[Episode],
    prompt_ids: Sequence[Sequence[int]],
    turn_tokens: int,
    *,
    do_sample: bool,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
) -> list[Played]:
    """Play every episode to its end (mutating them); one ``Played`` per episode."""
    played = [Played(list(p)) for p in prompt_ids]
    active = [i for i, e in enumerate(episodes) if not e.done]
    eos = tokenizer.eos_token_id
    ended_cleanly = [False] * len(episodes)
    was_training = model.training
    model.eval()  # no dropout, and the KV cache works under gradient checkpointing
    try:
        while active:
            contexts = [played[i].prompt_ids + played[i].completion_ids for i in active]
            turns = generate_turns(
                model, tokenizer, contexts, turn_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k
            )
            still = []
            for i, ids in zip(active, turns):
                played[i].add(ids, policy=True)
                text = tokenizer.decode(ids, skip_special_tokens=True)
                result = episodes[i].step(text)
                ended_cleanly[i] = result.action.kind != "invalid" or (bool(ids) and ids[-1] == eos)
                if result.done:
                    continue
                played[i].add(encode(tokenizer, result.info or INFO_CLOSE), policy=False)
                still.append(i)
            active = still
    finally:
        model.train(was_training)
    for p, clean in zip(played, ended_cleanly):
        if clean and (not p.completion_ids or p.completion_ids[-1] != eos):
            p.add([eos], policy=False)
    return played


def episode_stats(episode: Episode, reward: RewardConfig) -> dict[str, Any]:
    """Reward terms and the statistics logged per rollout."""
    terms = reward_breakdown(episode, reward)
    return {
        **{REWARD_FIELD.format(k): v for k, v in terms.items()},
        "reward_total": float(sum(terms.values())),
        "well_formed": bool(episode.well_formed),
        "calls": list(episode.calls),
        "called_models": [episode.spec.descriptors[k].id for k in episode.calls],
        "cost_usd": float(episode.cost_usd),
        "outcome": float(episode.outcome),
        "accepted": bool(episode.actions and episode.actions[-1].kind == "accept"),
    }


class RoutingRollout:
    """TRL ``rollout_func``: ``(prompts, trainer) -> dict`` (see the module docstring).

    ``prompts`` are the per-process slice of first-turn prompt texts (each repeated
    ``num_generations`` times by TRL's sampler); ``bank.fresh(prompt)`` gives each its own episode.
    """

    def __init__(self, bank, tokenizer, policy: PolicyConfig, reward: RewardConfig):
        self.bank = bank
        self.tokenizer = tokenizer
        self.turn_tokens = policy.think_budget + policy.action_tokens
        self.reward = reward

    def __call__(self, prompts: list[str], trainer) -> dict[str, Any]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        args = trainer.args
        episodes = [self.bank.fresh(p) for p in prompts]
        played = play(
            model, self.tokenizer, episodes, [encode(self.tokenizer, p) for p in prompts], self.turn_tokens,
            do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k or 0,
        )  # fmt: skip
        stats = [episode_stats(e, self.reward) for e in episodes]
        out: dict[str, Any] = {
            "prompt_ids": [p.prompt_ids for p in played],
            "completion_ids": [p.completion_ids for p in played],
            "logprobs": None,
            "env_mask": [p.env_mask for p in played],
        }
        for key in stats[0]:
            out[key] = [s[key] for s in stats]
        return out
