"""GRPO over the routing environment with TRL's ``GRPOTrainer`` and a LoRA adapter.

The dataset holds ``data.n_train_episodes`` pre-sampled training episodes, one row each, whose
``prompt`` is the episode's first-turn prompt text. TRL repeats each row ``num_generations`` times;
``RoutingRollout`` (TRL's ``rollout_func``) plays every copy to its end in the environment (multi-
round: the environment's ``<info>`` tokens are appended and masked out of the loss through
``env_mask``); one reward function per reward term returns that term; TRL normalises the summed
reward within each group of the same episode and takes a clipped policy-gradient step.

    accelerate launch -m routerl.train --config configs/grpo_tiny.yaml --stage grpo
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m routerl.train --config configs/grpo_smollm2.yaml
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from routerl.train.callbacks import ExtraLogsMixin
from routerl.train.config import GRPO_ARGS, TrainConfig, trainer_kwargs
from routerl.train.episodes import EpisodeBank
from routerl.train.rewards import make_reward_funcs
from routerl.train.rollout import RoutingRollout
from routerl.train.setup import common_args, run_stage

log = logging.getLogger(__name__)


def seen_models(envs) -> list[str]:
    """Every model that may enter a training pool (the route distribution's keys)."""
    return sorted({env.table.models[j] for env in envs for j in range(env.table.n_models) if env.seen[j]})


def grpo_args(config: TrainConfig):
    from trl import GRPOConfig

    g, p = config.grpo, config.policy
    turn = p.think_budget + p.action_tokens
    return GRPOConfig(**trainer_kwargs(GRPO_ARGS, dict(
        **common_args(config, "grpo"),
        learning_rate=g.learning_rate,
        max_steps=g.max_steps,
        per_device_train_batch_size=g.per_device_batch_size,
        gradient_accumulation_steps=g.gradient_accumulation_steps,
        num_generations=g.num_generations,
        temperature=g.temperature,
        top_p=g.top_p,
        beta=g.beta,
        epsilon=g.epsilon,
        loss_type=g.loss_type,
        scale_rewards=g.scale_rewards,
        warmup_steps=g.warmup_ratio,
        logging_steps=g.logging_steps,
        save_steps=g.save_steps,
        save_total_limit=g.save_total_limit,
        # The rollout bounds each turn; this is the longest possible completion (turns + <info>).
        max_completion_length=config.env.max_rounds * (turn + config.env.max_info_chars // 2 + 64),
        remove_unused_columns=False,
    ), g.extra))


def train_grpo(config: TrainConfig, envs, model, tokenizer, val_episodes) -> Path:
    """Run GRPO on the (PEFT) ``model``; returns the final adapter directory."""
    from datasets import Dataset
    from trl import GRPOTrainer

    class RoutingGRPOTrainer(ExtraLogsMixin, GRPOTrainer):
        pass

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is documented as experimental
    bank = EpisodeBank.sample(envs, tokenizer, config.data.n_train_episodes, config.data.seed, config.policy.max_query_chars, config.policy.prompt_style)
    log.info("GRPO over %d training episodes", len(bank))
    args = grpo_args(config)
    trainer = RoutingGRPOTrainer(
        model=model,
        reward_funcs=make_reward_funcs(config.env.max_pool, seen_models(envs)),
        args=args,
        train_dataset=Dataset.from_dict({"prompt": bank.prompts}),
        processing_class=tokenizer,
        rollout_func=RoutingRollout(bank, tokenizer, config.policy_config, config.reward.build()),
    )
    return run_stage(trainer, config, val_episodes, tokenizer, Path(args.output_dir))
