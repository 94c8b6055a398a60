"""Trainer callbacks: the resolved config beside every checkpoint, and the periodic validation metric.

``ValidationCallback`` plays a fixed set of validation episodes every ``validation.every_steps``
steps and at the end of training (main process only) and logs ``val/reward``, ``val/accuracy``,
``val/cost_per_1k``, ``val/calls``, ``val/format_rate``, each ``val/reward_<term>`` and ``val/aiq``
(fast-mode AIQ over ``validation.aiq_knobs``; see ``validate.knob_sweep_aiq``) with the
step's training metrics (through ``ExtraLogsMixin``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainerCallback

from routerl.policy.router import CONFIG_FILE
from routerl.train.config import TrainConfig, save_config
from routerl.train.validate import evaluate_policy, knob_sweep_aiq

log = logging.getLogger(__name__)


class ExtraLogsMixin:
    """Mix into a Trainer: ``log`` also writes (and clears) ``self.extra_logs``."""

    extra_logs: dict

    def log(self, logs, start_time=None):
        extra = getattr(self, "extra_logs", None)
        if extra:
            logs.update(extra)
            extra.clear()
        return super().log(logs, start_time)


class SaveConfigCallback(TrainerCallback):
    """Write ``routerl_config.yaml`` into each checkpoint directory, so it loads as a policy."""

    def __init__(self, config: TrainConfig):
        self.config = config

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                save_config(self.config, ckpt / CONFIG_FILE)
        return control


class ValidationCallback(TrainerCallback):
    def __init__(self, config: TrainConfig, episodes, tokenizer):
        self.config = config
        self.episodes = episodes
        self.tokenizer = tokenizer
        self.trainer = None  # set by attach()
        self.history: list[tuple[int, dict]] = []

    def attach(self, trainer) -> "ValidationCallback":
        self.trainer = trainer
        trainer.extra_logs = {}
        trainer.add_callback(self)
        return self

    def _run(self, state) -> dict[str, float] | None:
        if not state.is_world_process_zero or not self.episodes:
            return None
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        metrics = evaluate_policy(
            model, self.tokenizer, self.episodes, self.config.policy_config, self.config.reward.build(),
            mode=self.config.validation.mode,
        )  # fmt: skip
        if self.config.validation.aiq_knobs:
            metrics["aiq"] = knob_sweep_aiq(
                model, self.tokenizer, self.episodes, self.config.policy_config, self.config.validation.aiq_knobs
            )
        self.history.append((state.global_step, metrics))
        log.info("validation at step %d: %s", state.global_step, {k: round(v, 4) for k, v in metrics.items()})
        return {f"val/{k}": v for k, v in metrics.items()}

    def on_step_end(self, args, state, control, **kwargs):
        every = self.config.validation.every_steps
        if every and self.episodes and state.global_step % every == 0 and state.global_step < state.max_steps:
            control.should_log = True  # on every rank, so the log's collectives line up
            metrics = self._run(state)
            if metrics:
                self.trainer.extra_logs.update(metrics)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        metrics = self._run(state)
        if metrics:
            self.trainer.log(metrics)
        return control
