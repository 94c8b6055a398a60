"""The supervised warm start: teach the policy the action grammar by imitating a teacher router.

A cold small LM never emits ``<route>k</route>``, so GRPO would see only format penalties. This
stage labels ``data.n_sft_episodes`` training episodes with a teacher (``routerl.train.teacher``)
and fine-tunes the LoRA adapter on the teacher's full trajectories::

    input_ids = prompt | turn_1 | info_1 | turn_2 | eos
    labels    = -100   | turn_1 |  -100  | turn_2 | eos

so ``<info>`` text is masked out exactly as in GRPO. A share ``sft.think_fraction`` of the
examples carries a short rationale in ``<think>``; the rest act directly, which also trains the
fast mode's ``<route>k</route>`` continuations. Every piece is tokenized on its own and
concatenated, the way rollouts and serving build their contexts.

    accelerate launch -m routerl.train --config configs/grpo_tiny.yaml --stage sft
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from routerl.env.actions import ROUTE_OPEN
from routerl.policy.prompt import encode
from routerl.train.callbacks import ExtraLogsMixin
from routerl.train.config import SFT_ARGS, TrainConfig, trainer_kwargs
from routerl.train.episodes import EpisodeBank
from routerl.train.setup import common_args, run_stage
from routerl.train.teacher import trajectory

log = logging.getLogger(__name__)


def sft_example(tokenizer, prompt_text: str, pieces: list[str]) -> dict[str, list[int]]:
    """``input_ids``/``labels`` of one trajectory ``[turn, info, turn, ...]`` (see the module docstring)."""
    ids = encode(tokenizer, prompt_text)
    labels = [-100] * len(ids)
    for i, text in enumerate(pieces):
        piece = encode(tokenizer, text)
        ids += piece
        labels += piece if i % 2 == 0 else [-100] * len(piece)
    ids.append(tokenizer.eos_token_id)
    labels.append(tokenizer.eos_token_id)
    return {"input_ids": ids, "labels": labels}


def build_sft_dataset(config: TrainConfig, envs, tokenizer):
    """A ``datasets.Dataset`` of teacher trajectories on freshly sampled training episodes."""
    from datasets import Dataset

    n, share = config.data.n_sft_episodes, config.sft.min_escalation_share
    pool = n * (ESCALATION_POOL if share > 0 else 1)
    bank = EpisodeBank.sample(envs, tokenizer, pool, seed=config.data.seed + 1, max_query_chars=config.policy.max_query_chars, style=config.policy.prompt_style)
    rng = np.random.default_rng(config.seed)
    played = []
    for episode, prompt in zip(bank.episodes, bank.prompts):
        think = bool(rng.random() < config.sft.think_fraction)
        played.append((prompt, trajectory(episode, config.sft.teacher, think, config.sft.escalation)))
    per_dataset = config.sft.escalation_share_per_dataset
    picked = pick_indices(played, n, share, bank.sources if per_dataset else None)
    chosen = [played[i] for i in picked]
    escalating = sum(escalates(pieces) for _, pieces in chosen)
    log.info("SFT examples: %d teacher trajectories, %d escalate (%d of the first %d sampled did)",
             len(chosen), escalating, sum(escalates(p) for _, p in played[:n]), min(n, len(played)))
    if per_dataset:
        for k, env in enumerate(envs):
            mine = [played[i][1] for i in picked if bank.sources[i] == k]
            log.info("  %s: %d examples, %d escalate", env.table.name, len(mine), sum(escalates(p) for p in mine))
    return Dataset.from_list([sft_example(tokenizer, prompt, pieces) for prompt, pieces in chosen])


ESCALATION_POOL = 8  # with min_escalation_share: episodes sampled per example, at most


def escalates(pieces: list[str]) -> bool:
    """Whether a teacher trajectory ``[turn, info, turn, ...]`` routes more than once."""
    return sum(ROUTE_OPEN in turn for turn in pieces[::2]) > 1


def pick_examples(played: list, n: int, share: float, groups: Sequence[int] | None = None) -> list:
    """``n`` of the ``(prompt, pieces)`` trajectories, in sampled order (``pick_indices``)."""
    return [played[i] for i in pick_indices(played, n, share, groups)]


def pick_indices(played: list, n: int, share: float, groups: Sequence[int] | None = None) -> list[int]:
    """The sorted indices of ``n`` of the ``(prompt, pieces)`` trajectories: the first ones,
    except that escalating trajectories are taken first until ``share`` of ``n`` escalate (as
    many as there are).

    ``groups`` (one label per trajectory, e.g. its dataset): each group keeps the number of
    examples it has among the first ``n``, and ``share`` of them escalate, no more (the rest are
    its first trajectories that do not escalate, as far as there are), so that escalating is
    not a property of one dataset's queries, which a policy could learn instead of reading the
    answers. ``share`` 0: the first ``n``, as sampled, either way."""
    if share <= 0:
        return list(range(min(n, len(played))))
    esc = [escalates(pieces) for _, pieces in played]
    if groups is None:
        up = [i for i, e in enumerate(esc) if e][: int(round(share * n))]
        taken = set(up)
        rest = [i for i in range(len(played)) if i not in taken][: n - len(up)]
        return sorted(up + rest)
    labels = list(groups)
    quota: dict[int, int] = {}
    for g in labels[:n]:
        quota[g] = quota.get(g, 0) + 1
    chosen: list[int] = []
    for g, size in quota.items():
        members = [i for i in range(len(played)) if labels[i] == g]
        up = [i for i in members if esc[i]]
        calm = [i for i in members if not esc[i]]
        k = min(int(round(share * size)), len(up))
        fill = calm[: size - k]
        chosen += up[:k] + fill + up[k : k + size - k - len(fill)]
    return sorted(chosen)


def train_sft(config: TrainConfig, envs, model, tokenizer, val_episodes) -> Path:
    """Run the warm start on the (PEFT) ``model``; returns the final adapter directory."""
    from trl import SFTConfig, SFTTrainer

    class RoutingSFTTrainer(ExtraLogsMixin, SFTTrainer):
        pass

    s = config.sft
    dataset = build_sft_dataset(config, envs, tokenizer)
    log.info("SFT on %d teacher trajectories (%s teacher)", len(dataset), s.teacher)
    args = SFTConfig(**trainer_kwargs(SFT_ARGS, dict(
        **common_args(config, "sft"),
        learning_rate=s.learning_rate,
        max_steps=s.max_steps,
        num_train_epochs=s.epochs,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        warmup_steps=s.warmup_ratio,
        logging_steps=s.logging_steps,
        save_steps=s.save_steps,
        max_length=None,
        packing=False,
    ), s.extra))
    trainer = RoutingSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    return run_stage(trainer, config, val_episodes, tokenizer, Path(args.output_dir))
