"""Rollouts: the environment's <info> tokens are masked out of the loss; teacher data; reward functions."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from routerl.env import EnvConfig, RoutingEnv
from routerl.env.actions import INFO_CLOSE, INFO_OPEN
from routerl.policy.loading import TinySpec, load_base
from routerl.policy.prompt import encode, episode_prompt
from routerl.policy.router import PolicyConfig
from routerl.reward.terms import RewardConfig, reward_breakdown
from routerl.routers.base import USD_SCALE
from routerl.train import rollout as R
from routerl.train.episodes import EpisodeBank, fresh
from routerl.train.rewards import make_reward_funcs
from routerl.train.sft import sft_example
from routerl.train.teacher import estimated_costs, expected_scores, first_choice, trajectory


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_base("tiny", tiny=TinySpec(seed=2))


@pytest.fixture(scope="module")
def env(synthetic_world):
    table, splits, _ = synthetic_world
    return RoutingEnv(table, splits, EnvConfig(min_pool=3, max_pool=4, max_rounds=2))


@pytest.fixture(scope="module")
def bank(env, tiny):
    return EpisodeBank.sample([env], tiny[1], 8, seed=0)


def _script(monkeypatch, tok, turns_per_call):
    """Replace generation: call i returns the scripted turns for the still-active episodes."""
    calls = iter(turns_per_call)

    def fake(model, tokenizer, contexts, max_new_tokens, **kw):
        texts = next(calls)
        assert len(texts) == len(contexts)
        return [encode(tok, t) for t in texts]

    monkeypatch.setattr(R, "generate_turns", fake)


def test_info_tokens_are_masked(monkeypatch, tiny, bank):
    model, tok = tiny
    episodes = [bank.fresh(bank.prompts[0]), bank.fresh(bank.prompts[1])]
    prompts = [encode(tok, bank.prompts[0]), encode(tok, bank.prompts[1])]
    # Episode 0 routes, reads the answer and accepts; episode 1 breaks the grammar at once.
    _script(monkeypatch, tok, [["<route>2</route>", "no action here"], ["<accept/>"]])
    played = R.play(model, tok, episodes, prompts, 16, do_sample=False)

    p = played[0]
    assert len(p.completion_ids) == len(p.env_mask)
    info = episodes[0].info_text(1)
    turn1, info_ids, turn2 = encode(tok, "<route>2</route>"), encode(tok, info), encode(tok, "<accept/>")
    assert p.completion_ids == turn1 + info_ids + turn2 + [tok.eos_token_id]
    assert p.env_mask == [1] * len(turn1) + [0] * len(info_ids) + [1] * len(turn2) + [0]
    masked = [t for t, m in zip(p.completion_ids, p.env_mask) if m == 0][:-1]
    assert tok.decode(masked) == info and info.startswith(INFO_OPEN) and info.endswith(INFO_CLOSE)
    trained = tok.decode([t for t, m in zip(p.completion_ids, p.env_mask) if m == 1])
    assert INFO_OPEN not in trained and trained == "<route>2</route><accept/>"
    assert episodes[0].calls == [1] and episodes[0].well_formed

    # A malformed turn ends the episode unmasked and without an appended end-of-turn token.
    assert played[1].env_mask == [1] * len(played[1].completion_ids)
    assert not episodes[1].well_formed and reward_breakdown(episodes[1])["format"] == -1.0


def test_rollout_func_output(tiny, bank):
    """The real sampled rollout returns aligned ids and masks and every reward term."""
    model, tok = tiny
    rollout = R.RoutingRollout(bank, tok, PolicyConfig(think_budget=4, action_tokens=4, max_rounds=2), RewardConfig())
    trainer = SimpleNamespace(
        model=model,
        accelerator=SimpleNamespace(unwrap_model=lambda m: m),
        args=SimpleNamespace(temperature=1.0, top_p=1.0, top_k=0),
    )
    prompts = [bank.prompts[3]] * 2 + [bank.prompts[4]] * 2
    torch.manual_seed(0)
    out = rollout(prompts, trainer)
    assert out["logprobs"] is None
    assert len(out["prompt_ids"]) == len(out["completion_ids"]) == len(out["env_mask"]) == 4
    for ids, mask in zip(out["completion_ids"], out["env_mask"]):
        assert len(ids) == len(mask) and 0 < len(ids) <= 2 * 8 + 400
    assert out["prompt_ids"][0] == encode(tok, bank.prompts[3])
    for key in ("reward_format", "reward_outcome", "reward_cost", "calls", "called_models", "cost_usd", "well_formed"):
        assert len(out[key]) == 4


def test_grpo_trainer_masks_env_tokens_in_the_loss(monkeypatch, tmp_path, tiny, bank):
    """TRL turns the rollout's env_mask into its loss mask (completion_mask * tool_mask)."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import GRPOConfig, GRPOTrainer

    model, tok = load_base("tiny", tiny=TinySpec(seed=2))
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    _script(monkeypatch, tok, [["<route>1</route>"] * 4, ["<accept/>"] * 4])
    rollout = R.RoutingRollout(bank, tok, PolicyConfig(think_budget=4, action_tokens=4, max_rounds=2), RewardConfig())
    args = GRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=4, num_generations=4,
        max_steps=1, report_to="none", gradient_checkpointing=False, max_completion_length=512,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=peft, reward_funcs=make_reward_funcs(), args=args, processing_class=tok,
        train_dataset=Dataset.from_dict({"prompt": bank.prompts[:2]}), rollout_func=rollout,
    )  # fmt: skip
    out = trainer._generate_and_score_completions([{"prompt": bank.prompts[0]}] * 4)
    info = encode(tok, fresh(bank.episodes[0]).info_text(0))
    turn1 = encode(tok, "<route>1</route>")
    mask = out["tool_mask"][0].tolist()
    assert mask[: len(turn1)] == [1] * len(turn1)
    assert mask[len(turn1) : len(turn1) + len(info)] == [0] * len(info)
    assert out["completion_ids"][0, len(turn1) : len(turn1) + len(info)].tolist() == info


def test_sft_example_masks_info_and_trains_actions(tiny, bank):
    _, tok = tiny
    ep = fresh(bank.episodes[0])
    pieces = trajectory(ep, "descriptor", think=True)
    ex = sft_example(tok, bank.prompts[0], pieces)
    assert len(ex["input_ids"]) == len(ex["labels"])
    n_prompt = len(encode(tok, bank.prompts[0]))
    assert ex["labels"][:n_prompt] == [-100] * n_prompt
    trained = tok.decode([t for t, l in zip(ex["input_ids"], ex["labels"]) if l != -100], skip_special_tokens=True)
    assert trained == "".join(pieces[0::2])
    if len(pieces) > 1:
        assert INFO_OPEN in pieces[1] and INFO_OPEN not in trained
    assert ex["labels"][-1] == tok.eos_token_id


def test_teachers(env):
    rng = np.random.default_rng(3)
    for _ in range(20):
        ep = env.sample_episode(rng)
        k, why = first_choice(ep, "descriptor")
        u = expected_scores(ep) - ep.spec.knob * USD_SCALE * estimated_costs(ep)
        assert u[k] == u.max() and f"[{k + 1}]" in why
        ko, _ = first_choice(fresh(ep), "oracle")
        true_u = np.asarray(ep.scores) - ep.spec.knob * USD_SCALE * np.asarray(ep.costs)
        assert true_u[ko] == true_u.max()
        for teacher in ("descriptor", "oracle"):
            played = fresh(ep)
            pieces = trajectory(played, teacher, think=False)
            assert played.done and played.well_formed and pieces[0] == f"<route>{(k if teacher == 'descriptor' else ko) + 1}</route>"
            if played.scores[played.calls[0]] >= 0.5:
                assert len(played.calls) == 1  # a right answer is kept


def test_reward_funcs_return_terms_and_log_stats():
    funcs = make_reward_funcs(max_pool=3, models=["a", "b", "c"])
    assert [f.__name__ for f in funcs] == ["format", "outcome", "cost"]
    logged = {}
    kw = dict(
        reward_format=[0.0, -1.0], reward_outcome=[1.0, 0.0], reward_cost=[-0.2, 0.0], reward_total=[0.8, -1.0],
        well_formed=[True, False], outcome=[1.0, 0.0], calls=[[0, 2], []], called_models=[["a", "c"], []],
        cost_usd=[0.002, 0.0], accepted=[True, False],
    )  # fmt: skip
    assert funcs[0](prompts=["p", "p"], completions=["x", "y"], log_metric=logged.__setitem__, **kw) == [0.0, -1.0]
    assert funcs[2](prompts=["p", "p"], completions=["x", "y"], log_metric=logged.__setitem__, **kw) == [-0.2, 0.0]
    assert logged["episode/format_rate"] == 0.5 and logged["episode/calls"] == 1.0
    assert logged["episode/cost_per_1k"] == pytest.approx(1.0)
    assert (logged["route/pos_1"], logged["route/pos_2"], logged["route/pos_3"]) == (0.5, 0.0, 0.5)
    assert (logged["route/model/a"], logged["route/model/b"], logged["route/model/c"]) == (0.5, 0.0, 0.5)


def test_gain_escalation_escalates_only_when_the_next_call_pays(env):
    """``escalation="gain"``: an escalation is labelled only where the next candidate's recorded
    score gain exceeds the knob times its cost; ``wrong`` escalates after every wrong answer
    (when value is left), so ``gain`` escalates on a subset of the episodes ``wrong`` does."""
    rng = np.random.default_rng(5)
    counts = {"wrong": 0, "gain": 0}
    for _ in range(60):
        ep = env.sample_episode(rng)
        runs = {}
        for rule in ("wrong", "gain"):
            played = fresh(ep)
            trajectory(played, "descriptor", think=False, escalation=rule)
            runs[rule] = played.calls
            counts[rule] += len(played.calls) > 1
        if len(runs["gain"]) > 1:
            first, second = runs["gain"][:2]
            assert runs["wrong"][:2] == [first, second]
            assert ep.scores[second] - ep.scores[first] > ep.spec.knob * USD_SCALE * ep.costs[second]
        elif len(runs["wrong"]) > 1:
            first, second = runs["wrong"][:2]
            assert ep.scores[second] - ep.scores[first] <= ep.spec.knob * USD_SCALE * ep.costs[second]
    assert 0 < counts["gain"] < counts["wrong"]
    with pytest.raises(ValueError, match="escalation"):
        trajectory(fresh(ep), "descriptor", think=False, escalation="always")
