"""Train the routing policy: supervised warm start, then GRPO, from one YAML config.

    python -m routerl.train --config configs/grpo_tiny.yaml
    accelerate launch -m routerl.train --config configs/grpo_tiny.yaml
    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m routerl.train --config configs/grpo_tiny.yaml
    accelerate launch --config_file configs/accelerate/gpu.yaml -m routerl.train --config configs/grpo_smollm2.yaml

Options: ``--stage sft|grpo|sft+grpo`` (overrides ``stage``), ``--output-dir DIR``,
``--resume [auto|CHECKPOINT]``, ``--overwrite`` (replace an earlier run in the output directory,
which is otherwise refused) and ``--set SECTION.FIELD=VALUE`` (repeatable; any config field).

The run directory gets ``sft/`` and ``grpo/`` (each stage's checkpoints and ``final/`` adapter),
``final/`` (the last stage's adapter: ``load_policy_router(<dir>/final)``) and
``routerl_config.yaml`` (the resolved config). A config error exits with status 2 and a message
naming the field.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from routerl.policy.loading import one_line_error
from routerl.policy.router import CONFIG_FILE
from routerl.train.config import load_config, save_config
from routerl.train.episodes import build_envs, save_evidence, validation_episodes
from routerl.train.grpo import train_grpo
from routerl.train.setup import check_resume, load_trainable, setup_tracking
from routerl.train.sft import train_sft

log = logging.getLogger("routerl.train")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m routerl.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="training config YAML (see configs/grpo_tiny.yaml)")
    parser.add_argument("--stage", choices=["sft", "grpo", "sft+grpo"], help="override the config's stage")
    parser.add_argument("--output-dir", help="override the config's output_dir")
    parser.add_argument("--resume", nargs="?", const="auto", help="resume: auto (last checkpoint) or a checkpoint path")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run in the output directory (without it, or --resume, such a run is refused)")
    return parser.parse_args(argv)


def earlier_run(config) -> list[Path]:
    """What an earlier run left in ``config.output_dir`` that this run would write over: the
    resolved config, ``final/`` and the directories of the stages being run."""
    out = Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out}: is a file, not a directory")
    names = [CONFIG_FILE, "final", *config.stage.split("+")]
    return [out / n for n in names if (out / n).exists()]


def clear_earlier_run(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _load_trainable(config, adapter: str | None = None):
    """``load_trainable``, with a damaged base or adapter (truncated weights, another shape) as one
    line: ``SystemExit`` with status 2 and ``routerl.train: error: ...``."""
    try:
        return load_trainable(config, adapter)
    except Exception as exc:  # safetensors, peft and torch each raise their own error types
        print(f"routerl.train: error: cannot load the model ({config.model.base}, adapter {adapter or config.model.adapter}): "
              f"{one_line_error(exc)}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = list(args.set)
    if args.stage:
        overrides.append(f"stage={args.stage}")
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.resume:
        overrides.append(f"resume_from_checkpoint={args.resume}")
    try:
        config = load_config(args.config, overrides)
    except (ValueError, FileNotFoundError) as exc:
        print(f"routerl.train: error: {exc}", file=sys.stderr)
        return 2

    import torch
    from accelerate import PartialState
    from transformers import set_seed

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    state = PartialState(cpu=not torch.cuda.is_available())  # as the Trainer will set it up (gloo on CPU)
    logging.basicConfig(level=logging.INFO if state.is_main_process else logging.WARNING, format="%(asctime)s %(name)s: %(message)s", force=True)
    out = Path(config.output_dir)

    # A run never writes over an earlier one unless asked to (--resume continues it, --overwrite
    # replaces it); what it would write over is removed first, so no stale file is merged in.
    # Setup errors (the output directory, data files, the base model or adapter) end in one line.
    try:
        check_resume(config)
        earlier = earlier_run(config)
        if earlier and not config.resume_from_checkpoint:
            if not args.overwrite:
                raise ValueError(f"{out} holds an earlier run ({', '.join(p.name for p in earlier)}): pass --resume to "
                                 "continue it, --overwrite to replace it, or choose another --output-dir")
            if state.is_main_process:
                clear_earlier_run(earlier)
        state.wait_for_everyone()
        setup_tracking(config)
        set_seed(config.seed)

        # Environment: training episodes (train prompts, seen models) and fixed validation episodes.
        envs = build_envs(config)
        val = validation_episodes(envs, config.validation.n_episodes, config.validation.seed) if config.validation.n_episodes else []
    except (ValueError, OSError) as exc:
        print(f"routerl.train: error: {exc}", file=sys.stderr)
        return 2

    # Stage 1: supervised warm start (skipped when resuming a run whose warm start is done).
    adapter = None
    sft_final = out / "sft" / "final"
    if "sft" in config.stage.split("+"):
        if config.resume_from_checkpoint and (sft_final / "adapter_config.json").exists() and config.stage != "sft":
            log.info("warm start already done: %s", sft_final)
            adapter = str(sft_final)
        else:
            model, tokenizer = _load_trainable(config)
            adapter = str(train_sft(config, envs, model, tokenizer, val))
            if state.is_main_process:
                save_evidence(envs, Path(adapter))

    # Stage 2: GRPO, from the warm-start adapter when there is one.
    if "grpo" in config.stage.split("+"):
        model, tokenizer = _load_trainable(config, adapter)
        adapter = str(train_grpo(config, envs, model, tokenizer, val))

    # The final adapter and the resolved config.
    state.wait_for_everyone()
    if state.is_main_process:
        shutil.copytree(adapter, out / "final", dirs_exist_ok=True)
        save_evidence(envs, out / "final")
        save_config(config, out / CONFIG_FILE)
        log.info("final policy adapter: %s", out / "final")
    return 0


if __name__ == "__main__":
    sys.exit(main())
