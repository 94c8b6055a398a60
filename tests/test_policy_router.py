"""``PolicyRouter`` through the ``Router`` interface, and ``load_policy_router`` on a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from routerl.env import EnvConfig, RoutingEnv
from routerl.policy.loading import TinySpec, load_base
from routerl.policy.router import CONFIG_FILE, PolicyConfig, PolicyRouter, load_policy_router
from routerl.routers.base import Attempt, Decision, Router


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_base("tiny", tiny=TinySpec(seed=5))


@pytest.fixture(scope="module")
def spec(synthetic_world):
    table, splits, _ = synthetic_world
    env = RoutingEnv(table, splits, EnvConfig(min_pool=4, max_pool=4, max_rounds=2))
    return env.sample_episode(np.random.default_rng(11)).spec


def _check_ranking(decision: Decision, candidates):
    ids = [c.id for c in candidates]
    assert sorted(m for m, _ in decision.ranking) == sorted(ids)
    probs = [p for _, p in decision.ranking]
    assert probs == sorted(probs, reverse=True)
    assert abs(sum(probs) - 1.0) < 1e-4


@pytest.mark.parametrize("mode", ["think", "fast"])
def test_first_decision_routes_with_a_full_ranking(tiny, spec, mode):
    router = PolicyRouter(*tiny, PolicyConfig(mode=mode, think_budget=6, action_tokens=4, max_rounds=2))
    assert isinstance(router, Router) and router.max_rounds == 2
    d = router.decide(spec.query, spec.descriptors, knob=0.1)
    assert d.action == "route" and d.model_id in [c.id for c in spec.descriptors]
    assert d.router == "policy" and d.est_cost_usd > 0
    _check_ranking(d, spec.descriptors)
    if mode == "fast":
        assert d.ranking[0][0] == d.model_id
    again = router.decide(spec.query, spec.descriptors, knob=0.1)
    assert (again.model_id, again.ranking) == (d.model_id, d.ranking)  # greedy: deterministic


@pytest.mark.parametrize("mode", ["think", "fast"])
def test_second_round_accepts_or_routes_elsewhere(tiny, spec, mode):
    router = PolicyRouter(*tiny, PolicyConfig(mode=mode, think_budget=6, action_tokens=4, max_rounds=2))
    first = spec.descriptors[2]
    attempts = [Attempt(first.id, "I am not sure about this. The answer is 7.", 0.0004)]
    d = router.decide(spec.query, spec.descriptors, knob=0.1, attempts=attempts)
    assert d.action in ("route", "accept")
    if d.action == "route":
        assert d.model_id != first.id
    else:
        assert d.model_id == first.id
    _check_ranking(d, spec.descriptors)


def test_accepts_once_the_rounds_are_used(tiny, spec):
    router = PolicyRouter(*tiny, PolicyConfig(mode="fast", max_rounds=1))
    attempts = [Attempt(spec.descriptors[0].id, "42", 0.001)]
    d = router.decide(spec.query, spec.descriptors, knob=0.0, attempts=attempts)
    assert (d.action, d.model_id) == ("accept", spec.descriptors[0].id)
    _check_ranking(d, spec.descriptors)
    assert d.ranking[0] == (spec.descriptors[0].id, 1.0)


def test_fast_decide_many_matches_decide(tiny, spec):
    router = PolicyRouter(*tiny, PolicyConfig(mode="fast", max_rounds=2))
    knobs = [0.0, 0.1, 1.0]
    many = router.decide_many(spec.query, spec.descriptors, knobs)
    for k, d in zip(knobs, many):
        one = router.decide(spec.query, spec.descriptors, k)
        assert d.model_id == one.model_id
        assert np.allclose([p for _, p in d.ranking], [p for _, p in one.ranking], atol=1e-4)


def test_no_candidates_is_an_error(tiny, spec):
    with pytest.raises(ValueError, match="no candidates"):
        PolicyRouter(*tiny).decide(spec.query, [], knob=0.1)


def test_load_policy_router_from_an_adapter_checkpoint(tmp_path, tiny, spec):
    """A LoRA adapter directory with routerl_config.yaml loads as a router with its settings."""
    from peft import LoraConfig, get_peft_model

    from routerl.train.config import config_from_dict, save_config

    model, tok = load_base("tiny", tiny=TinySpec(seed=5))
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a non-trivial adapter
    peft.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cfg = config_from_dict(
        {"data": {"synthetic": {}}, "model": {"base": "tiny", "tiny": {"seed": 5}}, "policy": {"mode": "fast"}, "env": {"max_rounds": 2}}
    )
    save_config(cfg, tmp_path / CONFIG_FILE)

    router = load_policy_router(tmp_path)
    assert router.config.mode == "fast" and router.max_rounds == 2 and router.name == f"policy:{tmp_path.name}"
    d = router.decide(spec.query, spec.descriptors, knob=0.1)
    _check_ranking(d, spec.descriptors)
    # The merged adapter is what decides: the same weights merged by hand agree.
    merged = PolicyRouter(peft.merge_and_unload(), tok, PolicyConfig(mode="fast", max_rounds=2))
    ref = merged.decide(spec.query, spec.descriptors, knob=0.1)
    assert np.allclose([p for _, p in d.ranking], [p for _, p in ref.ranking], atol=1e-4)
    assert load_policy_router(tmp_path, mode="think").config.mode == "think"


@pytest.mark.parametrize("mode", ["think", "fast"])
def test_decide_batch_matches_decide(tiny, synthetic_world, mode):
    """The server's micro-batching API: one batched generation, the same decisions as one by one."""
    from routerl.routers.base import RouteCall

    table, splits, _ = synthetic_world
    env = RoutingEnv(table, splits, EnvConfig(min_pool=2, max_pool=5, max_rounds=2))
    rng = np.random.default_rng(4)
    specs = [env.sample_episode(rng).spec for _ in range(3)]
    router = PolicyRouter(*tiny, PolicyConfig(mode=mode, think_budget=6, action_tokens=4, max_rounds=2))
    calls = [RouteCall(s.query, s.descriptors, s.knob) for s in specs]
    calls.append(RouteCall(specs[0].query, specs[0].descriptors, 0.3, [Attempt(specs[0].descriptors[0].id, "7", 0.001)]))
    batch = router.decide_batch(calls)
    assert len(batch) == len(calls)
    for call, d in zip(calls, batch):
        one = router.decide(call.query, call.candidates, call.knob, call.attempts)
        assert (d.action, d.model_id) == (one.action, one.model_id)
        _check_ranking(d, call.candidates)


def test_unknown_policy_option_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown policy option 'temprature'"):
        load_policy_router("tiny", temprature=0.5)


def test_damaged_checkpoints_fail_in_one_line_naming_them(tmp_path):
    """What `routerl eval --router DIR`, `routerl serve --checkpoint DIR` and the eval tools load."""
    import shutil

    import yaml
    from peft import LoraConfig, get_peft_model

    from routerl.policy.router import CONFIG_FILE, load_policy_router

    good = tmp_path / "good"
    model, tok = load_base("tiny", tiny=TinySpec(seed=5))
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(good)
    tok.save_pretrained(good)
    (good / CONFIG_FILE).write_text(yaml.safe_dump({"model": {"base": "tiny", "tiny": {"seed": 5}}, "policy": {"mode": "fast"}}))
    assert load_policy_router(str(good)).name == "policy:good"
    damage = {
        "truncated": (lambda d: (d / "adapter_model.safetensors").write_bytes(b"x" * 100), "cannot load the policy (SafetensorError"),
        "no-config": (lambda d: (d / CONFIG_FILE).unlink(), "missing routerl_config.yaml"),
        "no-weights": (lambda d: (d / "adapter_model.safetensors").unlink(), "missing adapter_model.safetensors"),
        "model-3": (lambda d: (d / CONFIG_FILE).write_text("model: 3\n"), "field 'model' must be a mapping"),
        "tiny-key": (lambda d: (d / CONFIG_FILE).write_text("model: {base: tiny, tiny: {bogus: 1}}\n"), "unexpected keyword argument 'bogus'"),
        "mode": (lambda d: (d / CONFIG_FILE).write_text("model: {base: tiny}\npolicy: {mode: slow}\n"), "field 'mode'"),
        "no-adapter-config": (lambda d: (d / "adapter_config.json").unlink(), "nor a model directory"),
    }
    for name, (fn, needle) in damage.items():
        d = tmp_path / name
        shutil.copytree(good, d)
        fn(d)
        with pytest.raises(ValueError) as info:
            load_policy_router(str(d))
        assert str(d) in str(info.value) and needle in str(info.value) and "\n" not in str(info.value), (name, info.value)
    with pytest.raises(ValueError, match="no such checkpoint directory"):
        load_policy_router(str(tmp_path / "nope" / "x"))
    with pytest.raises(ValueError, match="a file, not a checkpoint directory"):
        load_policy_router(str(good / CONFIG_FILE))
