"""Shared set-up of a training stage: tracking, precision, the trainable model, common arguments.

* ``setup_tracking``: sets ``WANDB_MODE`` (offline by default) unless the user set it, and
  ``WANDB_PROJECT``/``WANDB_DIR``, when ``tracking.report_to`` names wandb.
* ``load_trainable``: the base LM with a LoRA adapter, new (``lora`` section) or loaded from an
  existing adapter directory and kept trainable.
* ``common_args``: ``TrainingArguments`` keywords every stage shares (device, precision, seed,
  reporting, output directory); ``resume_point``: the stage's ``resume_from_checkpoint``;
  ``save_adapter``: adapter + tokenizer + ``routerl_config.yaml`` into one directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from routerl.policy.loading import load_base
from routerl.policy.router import CONFIG_FILE
from routerl.train.config import TrainConfig, save_config

log = logging.getLogger(__name__)


def setup_tracking(config: TrainConfig) -> None:
    if "wandb" not in config.tracking.report_to:
        return
    os.environ.setdefault("WANDB_MODE", config.tracking.wandb_mode)
    os.environ.setdefault("WANDB_PROJECT", config.tracking.project)
    os.environ.setdefault("WANDB_DIR", str(Path(config.output_dir).resolve()))
    os.environ.setdefault("WANDB_RUN_GROUP", Path(config.output_dir).name)
    os.environ.setdefault("WANDB_SILENT", "true")
    Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)


def finish_tracking() -> None:
    """Close the stage's wandb run so the next stage starts its own."""
    try:
        import wandb
    except ImportError:  # pragma: no cover
        return
    if wandb.run is not None:
        wandb.finish()


def precision(config: TrainConfig) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    bf16 = config.bf16
    if bf16 == "auto":
        bf16 = cuda and torch.cuda.is_bf16_supported()
    if bf16 and not cuda:
        raise ValueError("config field 'bf16': true needs a CUDA device (this run is on CPU)")
    return {"use_cpu": not cuda, "bf16": bool(bf16), "fp16": False}


def common_args(config: TrainConfig, stage: str) -> dict[str, Any]:
    run_name = config.tracking.run_name or Path(config.output_dir).name
    return {
        "output_dir": str(Path(config.output_dir) / stage),
        "seed": config.seed,
        "report_to": [r for r in config.tracking.report_to if r != "none"] or "none",
        "run_name": f"{run_name}-{stage}",
        "gradient_checkpointing": config.gradient_checkpointing,
        "save_strategy": "steps",
        "logging_first_step": True,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        **precision(config),
    }


def load_trainable(config: TrainConfig, adapter: str | None = None):
    """``(PeftModel, tokenizer)``: the base with a trainable LoRA adapter."""
    from peft import LoraConfig, PeftModel, get_peft_model

    m = config.model
    adapter = adapter or m.adapter
    tok_dir = adapter if adapter and (Path(adapter) / "tokenizer.json").exists() else None
    model, tokenizer = load_base(m.base, tiny=m.tiny, dtype=m.dtype, tokenizer_dir=tok_dir)
    if adapter:
        return PeftModel.from_pretrained(model, adapter, is_trainable=True), tokenizer
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=list(config.lora.target_modules),
        modules_to_save=list(config.lora.modules_to_save) or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora), tokenizer


def resume_point(config: TrainConfig, stage_dir: Path) -> str | bool | None:
    """``resume_from_checkpoint`` for the stage writing to ``stage_dir``: ``auto`` resumes its last
    checkpoint if any; a checkpoint path applies only to the stage whose directory holds it."""
    r = config.resume_from_checkpoint
    if r is None:
        return None
    if r == "auto":
        return True if any(stage_dir.glob("checkpoint-*")) else None
    if not (Path(r) / "trainer_state.json").exists():
        raise FileNotFoundError(f"config field 'resume_from_checkpoint': no Trainer checkpoint in {r}")
    return r if Path(r).resolve().parent == stage_dir.resolve() else None


# Sections a resumed run must share with its checkpoint: they fix the model, the adapter's shape,
# the episodes and the prompt (a stage's steps, rates, logging and tracking may change).
RESUME_FIXED_SECTIONS = ("data", "env", "reward", "model", "lora", "policy")


def check_resume(config: TrainConfig) -> None:
    """Before anything is built: a ``resume_from_checkpoint`` path must be a Trainer checkpoint
    of a stage this run writes (``<output_dir>/sft`` or ``<output_dir>/grpo``); one elsewhere
    would be ignored and the run would start from scratch. The checkpoint resumed (the path, or
    with ``auto`` the last one of those directories) must have been written with the same
    ``RESUME_FIXED_SECTIONS``: another adapter shape or other episodes would be trained on
    silently, and the saved config would describe a run that did not happen."""
    r = config.resume_from_checkpoint
    if r is None:
        return
    stages = [Path(config.output_dir) / s for s in config.stage.split("+")]
    if r == "auto":
        found = [c for s in stages for c in s.glob("checkpoint-*") if (c / "trainer_state.json").exists()]
        checkpoint = max(found, key=lambda c: c.stat().st_mtime) if found else None
    else:
        checkpoint = Path(r)
        if not (checkpoint / "trainer_state.json").exists():
            raise ValueError(f"config field 'resume_from_checkpoint': no Trainer checkpoint in {r}")
        if checkpoint.resolve().parent not in [s.resolve() for s in stages]:
            where = " or ".join(str(s) for s in stages)
            raise ValueError(f"config field 'resume_from_checkpoint': {r} is not a checkpoint of {where}, so it would be ignored "
                             "(resume a run in its own --output-dir)")
    if checkpoint is not None and (checkpoint / CONFIG_FILE).exists():
        from routerl.policy.router import read_checkpoint_config

        from routerl.yaml_numbers import dump_yaml, load_yaml

        saved, now = read_checkpoint_config(checkpoint), load_yaml(dump_yaml(config.to_dict()))  # both as the file holds them
        changed = [f"{section}.{k}" for section in RESUME_FIXED_SECTIONS for k in sorted(set(saved.get(section) or {}) | set(now[section]))
                   if (saved.get(section) or {}).get(k) != now[section].get(k)]
        if changed:
            raise ValueError(f"config field 'resume_from_checkpoint': {checkpoint} was written with other values of "
                             f"{', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}; resume with its config, or start a new run")


def save_adapter(trainer, config: TrainConfig, path: Path) -> None:
    """The LoRA adapter, the tokenizer and ``routerl_config.yaml`` into ``path``."""
    trainer.save_model(str(path))
    if trainer.accelerator.is_main_process:
        save_config(config, path / CONFIG_FILE)
    trainer.accelerator.wait_for_everyone()  # the next stage loads it on every rank


def finished_checkpoint(stage_dir: Path, resume: str | bool | None, max_steps: int, epochs: float) -> Path | None:
    """The checkpoint ``resume`` names (``True``: the stage's last) when it has already reached the
    stage's end (``max_steps`` > 0: its global step; else ``epochs``), else None. Resuming such a
    checkpoint would make the Trainer run one step past the end and overwrite the final adapter."""
    import json

    if not resume:
        return None
    if resume is True:
        found = [c for c in stage_dir.glob("checkpoint-*") if (c / "trainer_state.json").exists()]
        if not found:
            return None
        checkpoint = max(found, key=lambda c: int(c.name.rsplit("-", 1)[-1]) if c.name.rsplit("-", 1)[-1].isdigit() else -1)
    else:
        checkpoint = Path(resume)
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    done = state.get("global_step", 0) >= max_steps if max_steps > 0 else (state.get("epoch") or 0.0) >= epochs - 1e-6
    return checkpoint if done else None


def restore_finished(trainer, checkpoint: Path, final: Path, config: TrainConfig) -> None:
    """Write ``final`` from a finished ``checkpoint`` (the run stopped after its last checkpoint
    and before saving the final adapter): the checkpoint's adapter weights into the model, saved."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = checkpoint / "adapter_model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"config field 'resume_from_checkpoint': {checkpoint} has no adapter_model.safetensors")
    set_peft_model_state_dict(trainer.model, load_file(str(weights)))
    save_adapter(trainer, config, final)


def run_stage(trainer, config: TrainConfig, val_episodes, tokenizer, stage_dir: Path) -> Path:
    """Train one stage (resuming when asked), with the config beside every checkpoint and the
    periodic validation metric; save the final adapter into ``stage_dir/final`` and return it.

    Resuming a stage that already reached its ``max_steps`` (or epochs) trains nothing: its final
    adapter is kept (or, when the run stopped before writing it, written from the last checkpoint).
    Raise the stage's ``max_steps`` to train it further."""
    from routerl.train.callbacks import SaveConfigCallback, ValidationCallback

    final = stage_dir / "final"
    resume = resume_point(config, stage_dir)
    done = finished_checkpoint(stage_dir, resume, trainer.args.max_steps, trainer.args.num_train_epochs)
    if done is not None:
        log.info("%s already reached the end of its stage (max_steps %s): nothing to train; raise max_steps to continue",
                 done, trainer.args.max_steps)
        if not (final / "adapter_config.json").exists():
            restore_finished(trainer, done, final, config)
        return final
    trainer.add_callback(SaveConfigCallback(config))
    ValidationCallback(config, val_episodes, tokenizer).attach(trainer)
    trainer.train(resume_from_checkpoint=resume)
    save_adapter(trainer, config, final)
    finish_tracking()
    return final
