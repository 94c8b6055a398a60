"""The training configuration: one ``TrainConfig`` with documented nested sections, loaded from YAML.

    config = load_config("configs/grpo_tiny.yaml", overrides=["grpo.max_steps=3"])
    save_config(config, "runs/x/routerl_config.yaml")

Sections: ``data`` (where episodes come from), ``env`` (episode sampling), ``reward`` (reward
terms), ``model`` (base LM), ``lora`` (the adapter), ``policy`` (prompt and decoding), ``sft``
(supervised warm start), ``grpo`` (RL), ``tracking`` (wandb), ``validation`` (periodic val metric).
Every field is documented in its dataclass docstring and in the example YAML files.

Loading fails fast: an unknown field, a wrong type or an invalid value raises ``ConfigError``
naming the field, e.g. ``config field 'grpo.learning_rate': must be > 0, got -1``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from routerl.env.routing_env import EnvConfig
from routerl.yaml_numbers import dump_yaml, load_yaml, read_yaml_file
from routerl.policy.loading import TinySpec
from routerl.policy.router import PolicyConfig
from routerl.reward.terms import REWARD_TERMS, RewardConfig


class ConfigError(ValueError):
    """An invalid config; ``field`` is the dotted path of the offending field."""

    def __init__(self, field_path: str, message: str):
        super().__init__(f"config field '{field_path}': {message}")
        self.field = field_path


# -- sections -------------------------------------------------------------------------------------
@dataclass
class SyntheticSection:
    """A seeded synthetic world (``routerl.data.synthetic.SyntheticWorld``).

    Attributes:
        seed: world seed (models, prompts, outcomes).
        n_seen: models that may enter training pools.
        n_unseen: models held out of training (evaluation only).
        n_prompts: prompts in the world (split by the hash rule: 60% train, 10% probe, 10% val, 20% test).
        domains: prompt domains (from math, code, law, biology, history, physics).
        discrimination: how sharply skill minus difficulty decides correctness.
        signal: probability that an answer's confidence phrase tells the truth.
    """

    seed: int = 0
    n_seen: int = 8
    n_unseen: int = 3
    n_prompts: int = 600
    domains: list[str] = field(default_factory=lambda: ["math", "code", "law", "biology"])
    discrimination: float = 2.0
    signal: float = 0.8

    def validate(self) -> None:
        _at_least(self, "n_seen", 2)
        _at_least(self, "n_unseen", 0)
        _at_least(self, "n_prompts", 20)
        _positive(self, "discrimination")
        if not 0.5 <= self.signal <= 1.0:
            raise ConfigError("signal", f"must be in [0.5, 1], got {self.signal}")


@dataclass
class DataSection:
    """Where training episodes come from: exactly one of ``synthetic`` or ``tables``.

    Attributes:
        synthetic: a synthetic world (see ``SyntheticSection``), or null.
        tables: outcome tables (JSONL/JSONL.gz paths; ``${VAR:-default}`` is expanded, relative
            paths are resolved from the working directory).
        splits: the splits.json that names each table's seen models (required with ``tables``).
            Only seen models and train prompts ever enter a training episode (the env enforces it).
        responses: load each table's ``<name>_responses.jsonl.gz`` (the ``<info>`` text of a call).
        n_train_episodes: size of the pre-sampled training episode set (the GRPO dataset).
        n_sft_episodes: episodes the teacher labels for the supervised warm start.
        seed: seed of episode sampling (pools, order, knobs, descriptor noise).
    """

    synthetic: Optional[SyntheticSection] = None
    tables: list[str] = field(default_factory=list)
    splits: Optional[str] = None
    responses: bool = True
    n_train_episodes: int = 2000
    n_sft_episodes: int = 512
    seed: int = 0

    def validate(self) -> None:
        if (self.synthetic is None) == (not self.tables):
            raise ConfigError("synthetic", "give exactly one of data.synthetic or data.tables")
        if self.tables and not self.splits:
            raise ConfigError("splits", "is required with data.tables (it names the seen models)")
        self.tables = [expand_path(t) for t in self.tables]
        if self.splits:
            self.splits = expand_path(self.splits)
        for i, t in enumerate(self.tables):
            if not Path(t).exists():
                raise ConfigError(f"tables[{i}]", f"file not found: {t}")
        if self.splits and not Path(self.splits).exists():
            raise ConfigError("splits", f"file not found: {self.splits}")
        _at_least(self, "n_train_episodes", 1)
        _at_least(self, "n_sft_episodes", 0)


@dataclass
class EnvSection:
    """Episode sampling (``routerl.env.EnvConfig``).

    Attributes:
        min_pool, max_pool: pool size range of a training episode.
        max_rounds: calls allowed per episode (1 = single call; 2 lets the policy read an answer
            and accept it or escalate).
        knobs: cost knobs sampled uniformly per episode.
        price_jitter: multiplicative noise on descriptor prices (log-normal sigma).
        score_jitter: additive noise on descriptor sample scores.
        max_info_chars: characters of an answer shown in ``<info>``.
        shortlist: 0 (every pool member is a candidate), or show the policy only this many, picked
            and annotated with per-query estimates by the evidence router (``routerl.routers.shortlist``).
        shortlist_order: ``value`` (best estimated utility first, in training and serving),
            ``cost`` (cheapest first) or ``random`` (random in training, cheapest first when served).
        evidence: the evidence router of shortlist mode: ``router`` (``knn-probe``, or
            ``learned``: one gradient-boosted predictor over all tables, cross-fitted on the train
            prompts, ``routerl.routers.learned_evidence``), its ``options`` and the sentence
            ``embedder``; its probe index is saved with the adapter (``evidence.npz``, and the
            learned regressor as ``learned.npz``) so serving needs no outcome table.
        answer_judge: shortlist mode with the ``learned`` evidence: fit an answer judge
            (``routerl.routers.cascade.AnswerJudge``: the ``cascade`` router's answer check and
            escalation rule, on the evidence router's cross-fitted estimates, margin chosen on val)
            whose note (``check 0.31; [2] +0.12``) ends each ``<info>`` block the policy reads;
            saved with the adapter as ``answer_judge.json``.
    """

    min_pool: int = 2
    max_pool: int = 6
    max_rounds: int = 2
    knobs: list[float] = field(default_factory=lambda: [0.0, 0.03, 0.1, 0.3, 1.0])
    price_jitter: float = 0.1
    score_jitter: float = 0.03
    max_info_chars: int = 600
    shortlist: int = 0
    shortlist_order: str = "random"
    evidence: dict[str, Any] = field(default_factory=lambda: {"router": "knn-probe", "options": {}, "embedder": "minilm"})
    answer_judge: bool = False

    def validate(self) -> None:
        self.knobs = [float(k) for k in self.knobs]
        ev = self.evidence
        if not isinstance(ev, dict) or set(ev) - {"router", "options", "embedder"}:
            raise ConfigError("evidence", "must be a mapping with router, options, embedder")
        ev.setdefault("router", "knn-probe")
        ev.setdefault("options", {})
        ev.setdefault("embedder", "minilm")
        if ev["router"] not in ("knn-probe", "learned"):
            raise ConfigError("evidence.router", f"must be knn-probe or learned (the routers serving can rebuild), got {ev['router']!r}")
        if not isinstance(ev["options"], dict):
            raise ConfigError("evidence.options", f"must be a mapping, got {ev['options']!r}")
        if ev["router"] == "learned":
            from routerl.routers.learned_evidence import EVIDENCE_OPTIONS

            unknown = sorted(set(ev["options"]) - set(EVIDENCE_OPTIONS))
            if unknown:
                raise ConfigError(f"evidence.options.{unknown[0]}", f"unknown option of the learned evidence router (known: {', '.join(EVIDENCE_OPTIONS)})")
        if self.answer_judge and not (self.shortlist and ev["router"] == "learned"):
            raise ConfigError("answer_judge", "needs shortlist mode with the learned evidence router (env.shortlist > 0, env.evidence.router: learned)")
        self.build()

    def build(self) -> EnvConfig:
        raw = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("evidence", "answer_judge")}
        try:
            return EnvConfig(**{**raw, "knobs": tuple(self.knobs)})
        except ValueError as exc:
            raise _rewrap(exc) from None


@dataclass
class RewardSection:
    """Reward terms (``routerl.reward.terms``): total = format + outcome + cost, each weighted.

    Attributes:
        format_penalty: reward of an episode that broke the grammar or called nobody (as -penalty).
        weights: term name -> multiplier (format, outcome, cost; missing = 1).
    """

    format_penalty: float = 1.0
    weights: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        for name, value in self.weights.items():
            if name not in REWARD_TERMS:
                raise ConfigError(f"weights.{name}", f"unknown reward term (known: {', '.join(REWARD_TERMS)})")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"weights.{name}", f"must be a finite number, got {value!r}")
        self.build()

    def build(self) -> RewardConfig:
        try:
            return RewardConfig(format_penalty=self.format_penalty, weights={k: float(v) for k, v in self.weights.items()})
        except ValueError as exc:
            raise _rewrap(exc) from None


@dataclass(frozen=True)
class TinySection(TinySpec):
    """The tiny random Llama used when ``model.base`` is ``tiny`` (tests, CI-sized runs): the
    loader's ``TinySpec`` (same fields and defaults), validated.

    Attributes:
        layers, hidden, heads, kv_heads, intermediate: its shape.
        max_positions: longest sequence it accepts.
        seed: init seed (the same seed always gives the same weights).
    """

    def validate(self) -> None:
        for name in ("layers", "hidden", "heads", "kv_heads", "intermediate", "max_positions"):
            _at_least(self, name, 1)
        if self.hidden % self.heads:
            raise ConfigError("hidden", f"must be a multiple of heads ({self.heads}), got {self.hidden}")
        if self.heads % self.kv_heads:
            raise ConfigError("kv_heads", f"must divide heads ({self.heads}), got {self.kv_heads}")


@dataclass
class ModelSection:
    """The base causal LM.

    Attributes:
        base: ``smollm2-135m-instruct`` (the embedded default), ``tiny`` (random test model) or a
            local HF model directory.
        tiny: shape of the tiny model (used when ``base`` is ``tiny``).
        adapter: an existing LoRA adapter to start from (e.g. a warm-start checkpoint), or null.
        dtype: weight dtype: float32, bfloat16 or float16 (CPU: float32).
    """

    base: str = "smollm2-135m-instruct"
    tiny: TinySection = field(default_factory=TinySection)
    adapter: Optional[str] = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    def validate(self) -> None:
        from routerl.policy.loading import KNOWN_BASES, TINY_BASE

        if self.base not in KNOWN_BASES and self.base != TINY_BASE and not Path(self.base).is_dir():
            raise ConfigError("base", f"unknown base {self.base!r}: use {', '.join([*KNOWN_BASES, TINY_BASE])} or a model directory")
        if self.adapter is not None:
            self.adapter = expand_path(self.adapter)
            if not (Path(self.adapter) / "adapter_config.json").exists():
                raise ConfigError("adapter", f"no LoRA adapter (adapter_config.json) in {self.adapter}")
            if not (Path(self.adapter) / "adapter_model.safetensors").exists():
                raise ConfigError("adapter", f"no LoRA weights (adapter_model.safetensors) in {self.adapter}")


@dataclass
class LoraSection:
    """The LoRA adapter (``peft.LoraConfig``).

    Attributes:
        r: rank.
        alpha: scaling numerator (the update is scaled by alpha / r).
        dropout: dropout on the adapter's input.
        target_modules: module names to adapt (``all-linear`` = every linear layer but the head).
        modules_to_save: modules trained in full and saved with the adapter (e.g. ``embed_tokens``
            and ``lm_head`` for the tiny random model, whose random output layer LoRA cannot fix).
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    modules_to_save: list[str] = field(default_factory=list)

    def validate(self) -> None:
        _at_least(self, "r", 1)
        _at_least(self, "alpha", 1)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ConfigError("target_modules", "must name at least one module")


@dataclass
class PolicySection:
    """Prompt and decoding settings (``routerl.policy.PolicyConfig``), shared by rollouts and serving.

    Attributes:
        mode: serving decision mode: ``think`` (generate, then act) or ``fast`` (score actions only).
        think_budget: tokens of reasoning before the action is forced (also the rollout's turn budget).
        action_tokens: tokens reserved after the think for the action tags.
        max_query_chars: longer queries are cut in the middle.
        max_info_chars: characters of an answer shown in ``<info>`` (serving; training uses env.max_info_chars).
        max_rounds: calls per request at serving; null = ``env.max_rounds`` (the only value allowed).
        prompt_style: shortlist mode's prompt text: ``verbose``, ``compact`` (the same numbers in
            ~90 tokens instead of ~150 for a short query) or ``dense`` (8 instead of 12 tokens per
            candidate line); not ``verbose`` needs ``env.shortlist``; training and serving use it alike.
        dtype: weights at serving (``float32``, ``bfloat16`` or ``int8`` dynamic quantization of the
            Linear layers, CPU); training always runs in ``model.dtype``.
        action_scoring: serving, fast mode: ``full`` (each action's whole text) or ``prefix`` (up to
            its first distinguishing token; fewer positions per request).
        engine: serving, fast mode: ``hf`` (the transformers forward) or ``fused``
            (``routerl.policy.fused``: fused projections, same numbers, not with int8).
    """

    mode: Literal["think", "fast"] = "think"
    think_budget: int = 48
    action_tokens: int = 12
    max_query_chars: int = 1500
    max_info_chars: int = 600
    max_rounds: Optional[int] = None
    prompt_style: Literal["verbose", "compact", "dense"] = "verbose"
    dtype: Literal["float32", "bfloat16", "int8"] = "float32"
    action_scoring: Literal["full", "prefix"] = "full"
    engine: Literal["hf", "fused"] = "hf"

    def validate(self) -> None:
        if self.engine == "fused" and self.dtype == "int8":
            raise ConfigError("policy.engine", "fused runs float32 or bfloat16 weights, not int8")
        _at_least(self, "think_budget", 0)
        _at_least(self, "action_tokens", 4)
        _at_least(self, "max_query_chars", 32)
        _at_least(self, "max_info_chars", 16)

    def build(self, shortlist: int = 0, shortlist_order: str = "random") -> PolicyConfig:
        """The ``PolicyConfig`` (``shortlist`` settings come from the env section)."""
        return PolicyConfig(**dataclasses.asdict(self), shortlist=shortlist, shortlist_order=shortlist_order)


@dataclass
class SftSection:
    """The supervised warm start: imitate a teacher router on training episodes.

    Attributes:
        teacher: ``descriptor`` (best expected utility from the descriptors the policy reads;
            escalates after a wrong answer) or ``oracle`` (the cost-aware oracle on true scores
            and costs of train prompts).
        escalation: descriptor teacher, after a wrong answer: ``wrong`` (escalate whenever the
            answer was wrong) or ``gain`` (only when the next candidate's recorded score gain
            exceeds the knob times the extra call's cost: ``routerl.train.teacher``) or ``check``
            (as the answer judge's note says; needs ``env.answer_judge``).
        min_escalation_share: at least this share of the examples are trajectories in which the
            teacher escalates (drawn from up to 8x more sampled episodes; 0 = as sampled).
            Escalation is rare on the shared data, and a warm start that sees few learns to always
            accept.
        escalation_share_per_dataset: apply ``min_escalation_share`` within each dataset, as an
            exact share (each dataset keeps its sampled share of the examples, and that share of
            its examples escalate, no more), so that escalating is not a property of one dataset's
            queries.
        think_fraction: share of examples whose completion carries a short rationale in
            ``<think>``; the rest act directly (so fast mode is trained too).
        learning_rate: AdamW learning rate.
        max_steps: optimizer steps (>0), or -1 to run ``epochs`` epochs.
        epochs: passes over the examples when ``max_steps`` is -1.
        batch_size: examples per device per step.
        gradient_accumulation_steps: steps accumulated per optimizer update.
        warmup_ratio: share of steps with a linear learning-rate warm-up.
        logging_steps: log every this many steps.
        save_steps: checkpoint every this many steps.
        extra: further ``trl.SFTConfig`` keyword arguments (names are checked).
    """

    teacher: Literal["descriptor", "oracle"] = "descriptor"
    escalation: Literal["wrong", "gain", "check"] = "wrong"
    min_escalation_share: float = 0.0
    escalation_share_per_dataset: bool = False
    think_fraction: float = 0.5
    learning_rate: float = 2e-4
    max_steps: int = -1
    epochs: float = 1.0
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.0
    logging_steps: int = 10
    save_steps: int = 500
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not 0.0 <= self.think_fraction <= 1.0:
            raise ConfigError("think_fraction", f"must be in [0, 1], got {self.think_fraction}")
        if not 0.0 <= self.min_escalation_share <= 1.0:
            raise ConfigError("min_escalation_share", f"must be in [0, 1], got {self.min_escalation_share}")
        _positive(self, "learning_rate")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError("max_steps", f"must be > 0, or -1 to use epochs, got {self.max_steps}")
        _positive(self, "epochs")
        for name in ("batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
            _at_least(self, name, 1)
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        _check_extra(self.extra, "trl.SFTConfig", "SFTConfig", SFT_ARGS)


@dataclass
class GrpoSection:
    """GRPO (``trl.GRPOTrainer``) over the routing environment.

    Attributes:
        learning_rate: AdamW learning rate.
        max_steps: optimizer steps.
        num_generations: rollouts per episode (the group whose rewards are normalised).
        per_device_batch_size: rollouts per device per step (a multiple of num_generations
            across devices).
        gradient_accumulation_steps: steps accumulated per optimizer update.
        temperature, top_p: rollout sampling.
        beta: KL coefficient against the base model (0 = no reference model).
        epsilon: PPO-style clipping range.
        loss_type: TRL loss aggregation (grpo, dapo, dr_grpo, bnpo, ...).
        scale_rewards: reward normalisation: group, batch or none.
        warmup_ratio: share of steps with a linear learning-rate warm-up.
        logging_steps: log every this many steps.
        save_steps: checkpoint (adapter + config) every this many steps.
        save_total_limit: checkpoints kept (oldest deleted), or null for all.
        extra: further ``trl.GRPOConfig`` keyword arguments (names are checked).
    """

    learning_rate: float = 1e-5
    max_steps: int = 200
    num_generations: int = 8
    per_device_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.0
    epsilon: float = 0.2
    loss_type: str = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    warmup_ratio: float = 0.0
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: Optional[int] = 3
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        _positive(self, "learning_rate")
        for name in ("max_steps", "per_device_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps"):
            _at_least(self, name, 1)
        _at_least(self, "num_generations", 2)
        if self.per_device_batch_size % self.num_generations and self.num_generations % self.per_device_batch_size:
            raise ConfigError(
                "per_device_batch_size",
                f"must be a multiple or a divisor of num_generations ({self.num_generations}), got {self.per_device_batch_size}",
            )
        _positive(self, "temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError("top_p", f"must be in (0, 1], got {self.top_p}")
        _at_least(self, "beta", 0.0)
        _positive(self, "epsilon")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        if self.save_total_limit is not None:
            _at_least(self, "save_total_limit", 1)
        if self.loss_type not in GRPO_LOSS_TYPES:
            raise ConfigError("loss_type", f"must be one of {', '.join(GRPO_LOSS_TYPES)}, got {self.loss_type!r}")
        _check_extra(self.extra, "trl.GRPOConfig", "GRPOConfig", GRPO_ARGS)


@dataclass
class TrackingSection:
    """Experiment tracking.

    Attributes:
        report_to: integrations (``wandb``) or ``none``.
        project: wandb project.
        run_name: run name (default: the output directory's name).
        wandb_mode: WANDB_MODE to use when the environment sets none (offline writes runs under
            ``<output_dir>/wandb``; ``wandb sync`` uploads them later).
    """

    report_to: list[str] = field(default_factory=lambda: ["wandb"])
    project: str = "routerl"
    run_name: Optional[str] = None
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"

    def validate(self) -> None:
        allowed = {"wandb", "tensorboard", "trackio", "none"}
        bad = [r for r in self.report_to if r not in allowed]
        if bad:
            raise ConfigError("report_to", f"unknown integration {bad[0]!r} (known: {', '.join(sorted(allowed))})")


@dataclass
class ValidationSection:
    """A periodic validation metric on a fixed set of episodes from val prompts (seen models).

    Attributes:
        every_steps: evaluate every this many steps (0 = only once, at the end of each stage).
        n_episodes: fixed validation episodes (val prompts; pools of seen models); 0 = no validation.
        mode: decision mode used: think (greedy generation) or fast (the fast-mode argmax); use
            the mode the policy is served in (``policy.mode``).
        seed: seed of the fixed episode set.
        aiq_knobs: cost knobs of the validation AIQ (``val/aiq``): the fixed episodes are replayed
            in fast mode at each knob and the (cost, accuracy) points go through the protocol's AIQ
            (``routerl.eval.frontier.aiq``); empty = no AIQ.
    """

    every_steps: int = 20
    n_episodes: int = 32
    mode: Literal["think", "fast"] = "think"
    seed: int = 1234
    aiq_knobs: list[float] = field(default_factory=lambda: [0.0, 0.1, 1.0, 10.0])

    def validate(self) -> None:
        _at_least(self, "every_steps", 0)
        _at_least(self, "n_episodes", 0)
        for i, k in enumerate(self.aiq_knobs):
            if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k < 0:
                raise ConfigError(f"aiq_knobs[{i}]", f"must be a finite number >= 0, got {k!r}")


@dataclass
class TrainConfig:
    """A training run.

    Attributes:
        stage: ``sft`` (warm start only), ``grpo`` (RL only) or ``sft+grpo`` (warm start, then RL
            from the warm-start adapter).
        output_dir: run directory: ``sft/`` and ``grpo/`` hold each stage's checkpoints,
            ``final/`` the final adapter; every adapter directory carries ``routerl_config.yaml``.
        seed: global seed (model init, sampling, data order).
        resume_from_checkpoint: null, ``auto`` (the last checkpoint of the stage being run, if
            any) or a checkpoint directory.
        bf16: mixed precision: ``auto`` (on when a CUDA device supports it), true or false.
        gradient_checkpointing: recompute activations in the backward pass (less memory, slower).
        torch_threads: CPU threads per process for torch, or null for torch's default (one per
            core). On a busy shared CPU, 1 avoids threads spin-waiting on each other.
        data, env, reward, model, lora, policy, sft, grpo, tracking, validation: the sections.
    """

    stage: Literal["sft", "grpo", "sft+grpo"] = "sft+grpo"
    output_dir: str = "runs/default"
    seed: int = 0
    resume_from_checkpoint: Optional[str] = None
    bf16: Literal["auto", True, False] = "auto"
    gradient_checkpointing: bool = False
    torch_threads: Optional[int] = None
    data: DataSection = field(default_factory=DataSection)
    env: EnvSection = field(default_factory=EnvSection)
    reward: RewardSection = field(default_factory=RewardSection)
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)
    policy: PolicySection = field(default_factory=PolicySection)
    sft: SftSection = field(default_factory=SftSection)
    grpo: GrpoSection = field(default_factory=GrpoSection)
    tracking: TrackingSection = field(default_factory=TrackingSection)
    validation: ValidationSection = field(default_factory=ValidationSection)

    def validate(self) -> None:
        if self.torch_threads is not None:
            _at_least(self, "torch_threads", 1)
        if self.policy.max_rounds is None:
            self.policy.max_rounds = self.env.max_rounds
        elif self.policy.max_rounds != self.env.max_rounds:
            raise ConfigError("policy.max_rounds", f"must equal env.max_rounds ({self.env.max_rounds}) or be null, got {self.policy.max_rounds}")
        if self.policy.prompt_style != "verbose" and not self.env.shortlist:
            raise ConfigError("policy.prompt_style", f"{self.policy.prompt_style!r} needs shortlist mode (env.shortlist > 0)")
        if self.sft.escalation == "check" and not self.env.answer_judge:
            raise ConfigError("sft.escalation", "'check' follows the answer judge's note: set env.answer_judge: true")
        if self.stage != "sft" and self.grpo.num_generations < 2:
            raise ConfigError("grpo.num_generations", "must be >= 2")

    @property
    def policy_config(self) -> PolicyConfig:
        return self.policy.build(self.env.shortlist, self.env.shortlist_order)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- loading --------------------------------------------------------------------------------------
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_path(value: str) -> str:
    """Expand ``${VAR}`` / ``${VAR:-default}`` and ``~``."""
    out = _ENV_VAR.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)
    return os.path.expanduser(out)


def _at_least(obj, name: str, lo: float) -> None:
    value = getattr(obj, name)
    if value < lo:
        raise ConfigError(name, f"must be >= {lo:g}, got {value}")


def _positive(obj, name: str) -> None:
    value = getattr(obj, name)
    if not value > 0 or not math.isfinite(value):
        raise ConfigError(name, f"must be > 0, got {value}")


# The trl.SFTConfig / trl.GRPOConfig arguments routerl sets from its own fields (setup.common_args,
# sft.train_sft, grpo.grpo_args check that they pass exactly these): ``extra`` may not set them.
COMMON_TRAINER_ARGS = frozenset({
    "output_dir", "seed", "report_to", "run_name", "gradient_checkpointing", "save_strategy", "logging_first_step",
    "disable_tqdm", "dataloader_num_workers", "use_cpu", "bf16", "fp16",
})  # fmt: skip
SFT_ARGS = COMMON_TRAINER_ARGS | {
    "learning_rate", "max_steps", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
    "warmup_steps", "logging_steps", "save_steps", "max_length", "packing",
}  # fmt: skip
GRPO_ARGS = COMMON_TRAINER_ARGS | {
    "learning_rate", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "num_generations",
    "temperature", "top_p", "beta", "epsilon", "loss_type", "scale_rewards", "warmup_steps", "logging_steps",
    "save_steps", "save_total_limit", "max_completion_length", "remove_unused_columns",
}  # fmt: skip
# TRL 1.16's GRPO losses (GRPOTrainer raises "Unknown loss type" only inside the first step).
GRPO_LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo")


def trainer_kwargs(managed: frozenset, kwargs: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` (exactly the ``managed`` names: a drift between this module and the stage code
    fails here, in the tests) plus the section's ``extra``."""
    if set(kwargs) != managed:
        raise AssertionError(f"trainer arguments drifted from config.py: {sorted(set(kwargs) ^ managed)}")
    return {**kwargs, **extra}


def _check_extra(extra: dict[str, Any], what: str, cls_name: str, managed: frozenset) -> None:
    import trl

    known = {f.name for f in dataclasses.fields(getattr(trl, cls_name))}
    for key in extra:
        if key not in known:
            raise ConfigError(f"extra.{key}", f"not a {what} field{_suggest(key, known)}")
        if key in managed:
            raise ConfigError(f"extra.{key}", f"routerl sets {what}'s {key} from its own fields (see the section's fields)")


def _rewrap(exc: ValueError) -> ConfigError:
    """Turn a ``field 'x' ...`` message of a library dataclass into a ConfigError on ``x``."""
    text = str(exc)
    m = re.match(r"field '([^']+)':?\s*(.*)", text)
    return ConfigError(m.group(1), m.group(2)) if m else ConfigError("?", text)


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (and build nested sections)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(value, inner[0], path)
    if origin is Literal:
        if value not in args or (isinstance(value, bool) != any(isinstance(a, bool) and a == value for a in args)):
            raise ConfigError(path, f"must be one of {', '.join(repr(a) for a in args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be a mapping, got {type(value).__name__}")
        return _build(tp, value, path)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"must be a list, got {value!r}")
        return [_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be a mapping, got {value!r}")
        return {str(k): (_convert(v, args[1], f"{path}.{k}") if args[1] is not Any else v) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(path, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(path, f"must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {value!r}")
        return value
    raise ConfigError(path, f"unsupported type {_type_name(tp)}")


def _build(cls, raw: dict[str, Any], prefix: str = ""):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    where = f"{prefix}." if prefix else ""
    for key in raw:
        if key not in known:
            raise ConfigError(f"{where}{key}", f"unknown field{_suggest(str(key), known)}")
    kwargs = {k: _convert(v, hints[k], f"{where}{k}") for k, v in raw.items()}
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):  # sections left at their defaults are checked too
        value = getattr(obj, f.name)
        if f.name not in raw and dataclasses.is_dataclass(value):
            _validate(value, f"{where}{f.name}")
    _validate(obj, prefix)
    return obj


def _validate(obj, prefix: str) -> None:
    try:
        obj.validate()
    except ConfigError as exc:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{where}{exc.field}", str(exc).split("': ", 1)[1]) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``grpo.max_steps=3`` -> (["grpo", "max_steps"], 3) (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(text, "an override is KEY=VALUE, e.g. grpo.max_steps=3")
    key, value = text.split("=", 1)
    return key.strip().split("."), load_yaml(value)


def config_from_dict(raw: dict[str, Any], overrides: list[str] = ()) -> TrainConfig:
    raw = dict(raw or {})
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(".".join(keys), "overrides a value that is not a section")
        node[keys[-1]] = value
    return _build(TrainConfig, raw)


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read, check and build a ``TrainConfig`` from YAML (see the module docstring)."""
    path = Path(path)
    raw = read_yaml_file(path, "config")
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"{path}: a config is a mapping of sections")
    return config_from_dict(raw or {}, overrides)


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config (every field, defaults included) as YAML."""
    data = config.to_dict()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("# resolved routerl training config\n" + dump_yaml(data, sort_keys=False), encoding="utf-8")
