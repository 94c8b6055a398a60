"""End to end: ``accelerate launch -m routerl.train --config configs/grpo_tiny.yaml`` (CI-sized),
the reward rising over the run, resuming, and (slow) two processes.

The learning check is honest: the same fixed held-out episodes (val prompts, seen models) are
played with sampling from a fixed seed by the untrained model, the warm-start adapter and the
final GRPO adapter; the mean reward must rise at each stage. No number is hard-coded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "grpo_tiny.yaml"


def _env(tmp: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("WANDB_DIR", None)  # offline runs go to <output_dir>/wandb
    return env


def _accelerate() -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch"]


def _launch(tmp: Path, out: Path, *extra: str, launcher=(), timeout=600) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [*_accelerate(), *launcher, "-m", "routerl.train", "--config", str(TINY), "--output-dir", str(out), *extra]
    start = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=_env(tmp), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        print(proc.stdout[-5000:], proc.stderr[-5000:])
    return proc, time.time() - start


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny_run")
    out = tmp / "run"
    proc, seconds = _launch(tmp, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"accelerate launch grpo_tiny: {seconds:.1f} s")
    return out, seconds, tmp


def _log_history(checkpoint: Path) -> list[dict]:
    return json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]


def test_launch_writes_adapters_configs_checkpoints_and_logs(tiny_run):
    out, seconds, _ = tiny_run
    assert seconds < 240, f"the CI-sized run took {seconds:.0f} s"
    for d in (out / "final", out / "sft" / "final", out / "grpo" / "final", out / "grpo" / "checkpoint-100"):
        assert (d / "adapter_config.json").exists() and (d / "routerl_config.yaml").exists(), d
    assert (out / "routerl_config.yaml").exists()
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(any(r.glob("*.wandb")) for r in runs)  # one offline run per stage

    history = _log_history(out / "grpo" / "checkpoint-100")
    keys = set().union(*history)
    for key in (
        "rewards/format/mean", "rewards/outcome/mean", "rewards/cost/mean", "episode/format_rate",
        "episode/cost_per_1k", "episode/calls", "route/pos_1", "route/pos_4", "val/reward", "val/accuracy",
        "val/aiq",
    ):  # fmt: skip
        assert key in keys, key
    assert all(0.0 <= h["val/aiq"] <= 1.0 for h in history if "val/aiq" in h)
    assert any(k.startswith("route/model/syn-") for k in keys)


def test_final_adapter_routes_through_the_router_interface(tiny_run, synthetic_world):
    from routerl.env import EnvConfig, RoutingEnv
    from routerl.policy import load_policy_router

    out, _, _ = tiny_run
    router = load_policy_router(out / "final")
    assert router.max_rounds == 2 and router.config.think_budget == 24
    table, splits, _ = synthetic_world
    spec = RoutingEnv(table, splits, EnvConfig(max_pool=4)).episode(
        int(table.prompts_in("test")[0]), [0, 1, 2], 0.1, training=False
    ).spec
    d = router.decide(spec.query, spec.descriptors, 0.1)
    assert d.action == "route" and d.model_id in {c.id for c in spec.descriptors}
    assert abs(sum(p for _, p in d.ranking) - 1) < 1e-4


def test_reward_rises_over_the_run(tiny_run):
    """Held-out reward: untrained < warm start < warm start + GRPO (sampled, fixed seed)."""
    from routerl.train.config import load_config
    from routerl.train.episodes import build_envs, validation_episodes
    from routerl.train.setup import load_trainable
    from routerl.train.validate import evaluate_policy

    out, _, _ = tiny_run
    torch.set_num_threads(1)
    cfg = load_config(out / "routerl_config.yaml")
    held_out = validation_episodes(build_envs(cfg), 96, seed=99)
    scores = {}
    for name, adapter in (("untrained", None), ("sft", out / "sft" / "final"), ("grpo", out / "final")):
        model, tok = load_trainable(cfg, str(adapter) if adapter else None)
        scores[name] = evaluate_policy(model, tok, held_out, cfg.policy_config, cfg.reward.build(), do_sample=True, seed=0)
    print({k: {m: round(v[m], 3) for m in ("reward", "format_rate", "accuracy", "cost_per_1k")} for k, v in scores.items()})
    assert scores["untrained"]["format_rate"] == 0.0
    assert scores["sft"]["reward"] > scores["untrained"]["reward"]
    assert scores["grpo"]["reward"] > scores["sft"]["reward"]


def test_resume_continues_from_the_last_checkpoint(tiny_run):
    out, _, tmp = tiny_run
    proc, _ = _launch(
        tmp, out, "--resume", "--set", "grpo.max_steps=104", "--set", "tracking.report_to=[none]"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warm start already done" in proc.stderr + proc.stdout
    state = json.loads((out / "grpo" / "checkpoint-104" / "trainer_state.json").read_text())
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert state["global_step"] == 104
    assert steps == sorted(set(steps))  # continued from step 100: no step was run twice
    assert (out / "final" / "adapter_config.json").exists()

    # Resuming the finished stage trains nothing (the Trainer would run step 105 and overwrite the
    # final adapter); a final adapter lost after the last checkpoint is written from it.
    import shutil

    weights = (out / "final" / "adapter_model.safetensors").read_bytes()
    args = ("--resume", "--set", "grpo.max_steps=104", "--set", "tracking.report_to=[none]")
    proc, _ = _launch(tmp, out, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already reached the end of its stage" in proc.stderr + proc.stdout
    assert sorted(p.name for p in (out / "grpo").glob("checkpoint-*")) == ["checkpoint-100", "checkpoint-104"]
    assert (out / "final" / "adapter_model.safetensors").read_bytes() == weights
    shutil.rmtree(out / "grpo" / "final")
    proc, _ = _launch(tmp, out, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (out / "grpo" / "checkpoint-105").exists()
    assert (out / "grpo" / "final" / "adapter_model.safetensors").read_bytes() == weights


def test_a_rerun_never_writes_over_an_earlier_run_unless_asked(tiny_run, capsys):
    from routerl.train.__main__ import main

    out, _, _ = tiny_run
    weights = out / "final" / "adapter_model.safetensors"
    before = weights.read_bytes()
    argv = ["--config", str(TINY), "--output-dir", str(out), "--set", "tracking.report_to=[none]"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{out} holds an earlier run" in err and "--resume" in err and "--overwrite" in err
    assert weights.read_bytes() == before
    assert main(["--config", str(TINY), "--output-dir", str(weights), "--set", "tracking.report_to=[none]"]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    # a checkpoint of another run directory would be ignored (a fresh start): refused before any work
    elsewhere = ["--config", str(TINY), "--output-dir", str(out.parent / "other"), "--set", "tracking.report_to=[none]"]
    assert main([*elsewhere, "--resume", str(next((out / "grpo").glob("checkpoint-*")))]) == 2
    assert "is not a checkpoint of" in capsys.readouterr().err
    assert main([*elsewhere, "--resume", str(out)]) == 2
    assert "no Trainer checkpoint in" in capsys.readouterr().err
    assert not (out.parent / "other").exists()
    # resuming with another adapter shape (or other episodes) than the checkpoint was written with
    assert main(["--config", str(TINY), "--output-dir", str(out), "--resume", "--set", "lora.r=8", "--set", "tracking.report_to=[none]"]) == 2
    assert "was written with other values of lora.r" in capsys.readouterr().err
    assert weights.read_bytes() == before
    # a damaged adapter to start from: one line, exit 2
    import shutil

    damaged = out.parent / "damaged-adapter"
    shutil.copytree(out / "final", damaged)
    (damaged / "adapter_model.safetensors").write_bytes(b"x" * 100)
    with pytest.raises(SystemExit) as info:
        main([*elsewhere, "--stage", "grpo", "--set", f"model.adapter={damaged}"])
    assert info.value.code == 2 and "cannot load the model" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes(tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2`` runs two gloo processes on CPU."""
    out = tmp_path / "run2"
    proc, seconds = _launch(
        tmp_path, out, "--set", "grpo.max_steps=20", "--set", "sft.max_steps=20",
        launcher=("--config_file", str(REPO / "configs" / "accelerate" / "cpu_2proc.yaml")),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("GRPO over") + proc.stdout.count("GRPO over") >= 1
    history = _log_history(out / "grpo" / "checkpoint-20")
    assert max(h["step"] for h in history) == 20
    assert (out / "final" / "adapter_config.json").exists()


def test_shortlist_mode_run_saves_its_evidence_and_serves_from_it(tmp_path, synthetic_world):
    """A CI-sized run in shortlist mode (SFT + a few GRPO steps): the final directory holds the
    evidence index, and the loaded router shortlists with it (no outcome table at load time)."""
    from routerl.env import EnvConfig, RoutingEnv
    from routerl.policy import load_policy_router

    out = tmp_path / "run"
    proc, _ = _launch(
        tmp_path, out, "--set", "env.shortlist=2", "--set", "env.evidence={router: knn-probe, options: {k: 10}, embedder: hash}",
        "--set", "sft.max_steps=10", "--set", "grpo.max_steps=4", "--set", "tracking.report_to=[none]",
        "--set", "validation.n_episodes=8",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "final" / "evidence.npz").exists() and (out / "sft" / "final" / "evidence.npz").exists()
    router = load_policy_router(out / "final")
    assert router.config.shortlist == 2 and router.evidence.k == 10
    table, splits, _ = synthetic_world
    prompt = int(table.prompts_in("test")[0])
    spec = RoutingEnv(table, splits, EnvConfig(max_pool=8)).episode(prompt, [0, 1, 2, 3], 0.1, training=False).spec
    d = router.decide(spec.query, spec.descriptors, 0.1)
    assert d.model_id in {c.id for c in router.shortlist(spec.query, spec.descriptors, 0.1).candidates(spec.descriptors)}
