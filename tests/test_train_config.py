"""Training configs: the shipped YAML files load, and bad fields fail fast naming the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from routerl.train.config import ConfigError, TrainConfig, config_from_dict, load_config, save_config

REPO = Path(__file__).resolve().parents[1]
SYN = {"data": {"synthetic": {"seed": 1}}}


def test_tiny_config_loads():
    cfg = load_config(REPO / "configs" / "grpo_tiny.yaml")
    assert isinstance(cfg, TrainConfig)
    assert cfg.model.base == "tiny" and cfg.data.synthetic is not None and cfg.stage == "sft+grpo"
    assert cfg.policy_config.max_rounds == cfg.env.max_rounds == 2
    assert cfg.env.build().knobs == (0.0, 0.1, 1.0)


def test_smollm2_config_loads(monkeypatch, tmp_path):
    for name in ("zeroeval.jsonl.gz", "splits.json"):
        (tmp_path / name).write_text("")
    monkeypatch.setenv("ROUTERL_SHARED_DATA", str(tmp_path))
    cfg = load_config(REPO / "configs" / "grpo_smollm2.yaml")
    assert cfg.model.base == "smollm2-135m-instruct"
    assert cfg.data.tables == [str(tmp_path / "zeroeval.jsonl.gz")] and cfg.data.splits == str(tmp_path / "splits.json")


JUDGE_RUN = ["env.max_rounds=3", "env.answer_judge=true", "sft.escalation=check", "sft.min_escalation_share=0.3"]


def test_default_policy_config_loads(monkeypatch, tmp_path):
    for name in ("zeroeval.jsonl.gz", "mmlupro.jsonl.gz", "splits.json"):
        (tmp_path / name).write_text("")
    monkeypatch.setenv("ROUTERL_SHARED_DATA", str(tmp_path))
    cfg = load_config(REPO / "configs" / "policy_smollm2.yaml")
    assert cfg.model.base == "smollm2-135m-instruct" and len(cfg.data.tables) == 2
    assert cfg.env.shortlist == 3 and cfg.env.shortlist_order == "value" and cfg.env.evidence["router"] == "learned"
    assert cfg.policy_config.prompt_style == "dense" and cfg.policy_config.shortlist == 3 and cfg.policy_config.dtype == "bfloat16"
    assert cfg.policy_config.engine == "fused" and cfg.sft.escalation == "gain" and not cfg.env.answer_judge
    assert cfg.env.max_rounds == 2 == cfg.policy_config.max_rounds
    judged = load_config(REPO / "configs" / "policy_smollm2.yaml", JUDGE_RUN)  # the experiment in docs/results.md
    assert judged.env.answer_judge and judged.sft.escalation == "check" and judged.policy_config.max_rounds == 3
    with pytest.raises(ValueError, match=r"config field 'env.evidence.router': must be"):  # named once, not env.env.
        load_config(REPO / "configs" / "policy_smollm2.yaml", ["env.evidence={router: cluster-probe}"])


def test_every_field_of_the_shipped_configs_is_commented():
    for name in ("grpo_tiny.yaml", "grpo_smollm2.yaml", "policy_smollm2.yaml"):
        for line in (REPO / "configs" / name).read_text().splitlines():
            if ":" in line and not line.lstrip().startswith(("#", "-")):
                assert "#" in line or line.rstrip().endswith(":"), f"{name}: undocumented field line {line!r}"


@pytest.mark.parametrize(
    "raw, field, message",
    [
        ({"grpo": {"learning_rate": -1}}, "grpo.learning_rate", "must be > 0"),
        ({"grpo": {"learnig_rate": 1e-5}}, "grpo.learnig_rate", "did you mean 'learning_rate'"),
        ({"grpo": {"num_generations": 1}}, "grpo.num_generations", ">= 2"),
        ({"grpo": {"num_generations": 4, "per_device_batch_size": 6}}, "grpo.per_device_batch_size", "multiple"),
        ({"grpo": {"extra": {"not_a_field": 1}}}, "grpo.extra.not_a_field", "not a trl.GRPOConfig field"),
        ({"sft": {"max_steps": 0}}, "sft.max_steps", "must be > 0"),
        ({"sft": {"teacher": "human"}}, "sft.teacher", "must be one of"),
        ({"sft": {"think_fraction": 2}}, "sft.think_fraction", "[0, 1]"),
        ({"env": {"min_pool": 0}}, "env.min_pool", ">= 1"),
        ({"env": {"max_pool": 1, "min_pool": 3}}, "env.max_pool", ">= min_pool"),
        ({"env": {"knobs": [0.1, "high"]}}, "env.knobs[1]", "must be a number"),
        ({"reward": {"weights": {"speed": 1.0}}}, "reward.weights.speed", "unknown reward term"),
        ({"reward": {"format_penalty": -1}}, "reward.format_penalty", ">= 0"),
        ({"model": {"base": "gpt-9"}}, "model.base", "unknown base"),
        ({"model": {"dtype": "int8"}}, "model.dtype", "must be one of"),
        ({"model": {"tiny": {"hidden": 30, "heads": 4}}}, "model.tiny.hidden", "multiple of heads"),
        ({"lora": {"r": 0}}, "lora.r", ">= 1"),
        ({"lora": {"dropout": 1.5}}, "lora.dropout", "[0, 1)"),
        ({"policy": {"mode": "slow"}}, "policy.mode", "must be one of"),
        ({"policy": {"max_rounds": 3}}, "policy.max_rounds", "must equal env.max_rounds"),
        ({"policy": {"prompt_style": "compact"}}, "policy.prompt_style", "needs shortlist mode"),
        ({"policy": {"prompt_style": "terse"}}, "policy.prompt_style", "must be one of"),
        ({"policy": {"dtype": "int4"}}, "policy.dtype", "must be one of"),
        ({"stage": "ppo"}, "stage", "must be one of"),
        ({"bf16": 1}, "bf16", "must be one of"),
        ({"seed": "zero"}, "seed", "must be an integer"),
        ({"tracking": {"report_to": ["mlflow"]}}, "tracking.report_to", "unknown integration"),
        ({"validation": {"every_steps": -1}}, "validation.every_steps", ">= 0"),
        ({"torch_threads": 0}, "torch_threads", ">= 1"),
        ({"surprise": 1}, "surprise", "unknown field"),
        ({"grpo": 3}, "grpo", "must be a mapping"),
        ({"grpo": {"loss_type": "nonsense"}}, "grpo.loss_type", "must be one of grpo, dapo"),
        ({"grpo": {"extra": {"output_dir": "x"}}}, "grpo.extra.output_dir", "routerl sets trl.GRPOConfig's output_dir"),
        ({"sft": {"extra": {"max_steps": 5}}}, "sft.extra.max_steps", "routerl sets trl.SFTConfig's max_steps"),
        ({"env": {"evidence": {"router": "x"}}}, "env.evidence.router", "must be knn-probe or learned"),
    ],
)
def test_bad_fields_fail_naming_the_field(raw, field, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict({**SYN, **raw})
    assert info.value.field == field
    assert str(info.value).startswith(f"config field '{field}': ")
    assert message in str(info.value)


def test_data_source_must_be_exactly_one(tmp_path):
    with pytest.raises(ConfigError, match="'data.synthetic': give exactly one"):
        config_from_dict({})
    with pytest.raises(ConfigError, match="'data.splits': is required"):
        config_from_dict({"data": {"tables": [str(tmp_path / "t.jsonl")]}})
    with pytest.raises(ConfigError, match=r"'data.tables\[0\]': file not found"):
        config_from_dict({"data": {"tables": [str(tmp_path / "t.jsonl")], "splits": str(tmp_path / "s.json")}})


def test_overrides_and_round_trip(tmp_path):
    cfg = config_from_dict(SYN, ["grpo.max_steps=3", "env.knobs=[0, 1]", "tracking.report_to=[none]"])
    assert cfg.grpo.max_steps == 3 and cfg.env.knobs == [0.0, 1.0] and cfg.tracking.report_to == ["none"]
    with pytest.raises(ConfigError, match="'grpo.max_steps': must be >= 1"):
        config_from_dict(SYN, ["grpo.max_steps=0"])
    # PyYAML reads "1e-4" (no dot) as text; a float field takes it as the number it spells
    exp = config_from_dict(SYN, ["grpo.learning_rate=1e-4", "env.knobs=[0, 3E-2, .5e+1]"])
    assert exp.grpo.learning_rate == 1e-4 and exp.env.knobs == [0.0, 0.03, 5.0]
    assert config_from_dict(SYN, ["grpo.extra={max_grad_norm: 5e-1}"]).grpo.extra == {"max_grad_norm": 0.5}  # untyped too
    assert yaml.safe_load("x: 1e-4") == {"x": "1e-4"}  # PyYAML's own loader is left as it is
    with pytest.raises(ConfigError, match="'grpo.learning_rate': must be a number, got 'e-4'"):
        config_from_dict(SYN, ["grpo.learning_rate=e-4"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["policy"]["max_rounds"] == cfg.env.max_rounds


def test_cli_reports_a_bad_config_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {synthetic: {}}\ngrpo: {learning_rate: -1}\n")
    out = subprocess.run(
        [sys.executable, "-m", "routerl.train", "--config", str(bad)], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == "routerl.train: error: config field 'grpo.learning_rate': must be > 0, got -1.0"


def test_validation_aiq_knobs_are_checked():
    from routerl.train.config import ConfigError, ValidationSection

    with pytest.raises(ConfigError, match="aiq_knobs"):
        ValidationSection(aiq_knobs=[0.0, -1.0]).validate()
    ValidationSection(aiq_knobs=[]).validate()


def test_a_table_missing_from_the_splits_file_is_refused(tmp_path):
    """Its models would all count as seen (unseen ones included) and enter training pools."""
    import gzip

    from conftest import shared_file
    from routerl.train.episodes import build_envs

    source = shared_file("zeroeval.jsonl.gz")
    table = tmp_path / "other.jsonl.gz"
    with gzip.open(source, "rt") as fh, gzip.open(table, "wt") as out:
        for _, line in zip(range(500), fh):
            out.write(line)
    config = config_from_dict({"data": {"tables": [str(table)], "splits": str(shared_file("splits.json")), "responses": False}})
    with pytest.raises(ValueError, match=r"'data.tables\[0\]': dataset 'other' .* is not in .*splits.json, which names mmlupro, zeroeval"):
        build_envs(config)
