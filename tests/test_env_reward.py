"""Environment episodes (single and multi-round, invalid turns), seen-only training pools, reward terms."""

import numpy as np
import pytest

from routerl.env import EnvConfig, RoutingEnv, parse_action
from routerl.env.routing_env import UnseenModelError
from routerl.reward import RewardConfig, reward_breakdown, total_reward


@pytest.fixture(scope="module")
def env(synthetic_world):
    table, splits, _ = synthetic_world
    return RoutingEnv(table, splits, EnvConfig(min_pool=2, max_pool=5, max_rounds=2))


def test_parse_action_grammar():
    assert parse_action("<route>2</route>", 3).index == 1
    a = parse_action("<think>cheap one</think>\n<route>1</route>", 3)
    assert a.kind == "route" and a.well_formed and a.think == "cheap one"
    assert parse_action("<accept/>", 3).kind == "accept"
    sloppy = parse_action("I pick <route>3</route> because", 3)
    assert sloppy.kind == "route" and not sloppy.well_formed
    for bad in ["", "route 2", "<route>9</route>", "<route>1</route><route>2</route>", "<route>1</route><accept/>", "<think>unclosed"]:
        assert parse_action(bad, 3).kind == "invalid", bad


def test_training_episodes_use_only_seen_models_and_train_prompts(env):
    table = env.table
    unseen = set(np.flatnonzero(env.unseen).tolist())
    assert unseen
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(300):
        ep = env.sample_episode(rng)
        assert not (set(ep.spec.pool) & unseen)
        assert table.split[ep.spec.prompt] == "train"
        sizes.add(len(ep.spec.pool))
    assert sizes == {2, 3, 4, 5}


def test_unseen_model_can_never_enter_a_training_episode(env):
    table = env.table
    u = int(np.flatnonzero(env.unseen)[0])
    prompt = int(next(i for i in table.prompts_in("train") if table.available[i, u]))
    with pytest.raises(UnseenModelError):
        env.episode(prompt, [u], 0.0, training=True)
    test_prompt = int(table.prompts_in("test")[0])
    with pytest.raises(UnseenModelError):
        env.episode(test_prompt, [0], 0.0, training=True)
    env.episode(test_prompt, [0, u], 0.0, training=False)  # evaluation may use any pool


def test_training_descriptors_are_perturbed_not_renamed(env):
    rng = np.random.default_rng(1)
    ep = env.sample_episode(rng)
    for j, d in zip(ep.spec.pool, ep.spec.descriptors):
        base = env.descriptors[env.table.models[j]]
        assert d.id == base.id
        assert d.input_price_per_mtok != base.input_price_per_mtok
        assert abs(np.log(d.input_price_per_mtok / base.input_price_per_mtok)) < 0.6


def test_multi_round_episode_and_reward_terms(env):
    table = env.table
    prompt = int(table.prompts_in("train")[0])
    pool = table.pool(prompt, env.seen)[:3]
    ep = env.episode(prompt, pool, knob=0.5, training=True)
    r1 = ep.step("<route>1</route>")
    assert not r1.done and r1.info.startswith("<info>[1] answered") and table.response(prompt, pool[0])[:20] in r1.info
    r2 = ep.step("<think>not sure, escalate</think><route>3</route>")
    assert r2.done  # max_rounds=2 reached: the last routed answer is final
    assert ep.final_model == pool[2]
    terms = reward_breakdown(ep)
    assert terms["format"] == 0.0
    assert terms["outcome"] == table.score[prompt, pool[2]]
    assert terms["cost"] == pytest.approx(-0.5 * 1000 * (table.cost[prompt, pool[0]] + table.cost[prompt, pool[2]]))
    assert total_reward(ep) == pytest.approx(sum(terms.values()))


def test_accept_invalid_and_format_penalty(env):
    table = env.table
    prompt = int(table.prompts_in("train")[1])
    pool = table.pool(prompt, env.seen)[:2]
    ep = env.episode(prompt, pool, 0.0, training=True)
    ep.step("<route>2</route>")
    assert ep.step("<accept/>").done and ep.final_model == pool[1]
    assert reward_breakdown(ep)["format"] == 0.0

    ep = env.episode(prompt, pool, 0.0, training=True)
    assert ep.step("<accept/>").done  # accept before any route is invalid
    assert ep.final is None and reward_breakdown(ep, RewardConfig(format_penalty=0.7)) == {"format": -0.7, "outcome": 0.0, "cost": -0.0}

    ep = env.episode(prompt, pool, 0.0, training=True)
    ep.step("<route>1</route>")
    ep.step("<route>1</route>")  # calling the same candidate twice is invalid; the first answer stays final
    assert ep.done and ep.final_model == pool[0] and reward_breakdown(ep)["format"] == -1.0


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="'max_pool'"):
        EnvConfig(min_pool=3, max_pool=2)
    with pytest.raises(ValueError, match="'knobs'"):
        EnvConfig(knobs=(-1.0,))
    with pytest.raises(ValueError, match="'weights.bogus'"):
        RewardConfig(weights={"bogus": 1.0})
