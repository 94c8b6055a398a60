"""Shortlist mode: the evidence router picks and annotates the candidates the policy reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from routerl.data.embeddings import HashEmbedder
from routerl.env import EnvConfig, RoutingEnv
from routerl.policy.loading import TinySpec, load_base
from routerl.policy.prompt import episode_prompt
from routerl.policy.router import CONFIG_FILE, EVIDENCE_FILE, PolicyConfig, PolicyRouter, load_policy_router
from routerl.routers.base import Attempt, utility
from routerl.routers.knn_probe import KnnProbeRouter
from routerl.routers.probe_index import ProbeIndex
from routerl.routers.shortlist import select_shortlist, shortlist_for


def test_select_shortlist_keeps_the_best_values_and_the_called_models():
    est = np.array([0.9, 0.8, 0.3, 0.95, 0.5])
    cost = np.array([0.010, 0.001, 0.0001, 0.050, 0.002])  # USD per call
    knob = 1.0  # utility: est - cost * 1000
    best = np.argsort(-(est - cost * 1000))[:2]
    s = select_shortlist(est, cost, knob, 2, order="value")
    assert list(s.positions) == list(best) and s.estimates == tuple(est[best])
    s = select_shortlist(est, cost, knob, 2, include=[3], order="value")
    assert 3 in s.positions and len(s.positions) == 2
    s = select_shortlist(est, cost, 0.0, 3, order="cost")
    assert [cost[p] for p in s.positions] == sorted(cost[p] for p in s.positions)
    assert set(s.positions) == {0, 1, 3}  # knob 0: best estimates whatever they cost
    assert len(select_shortlist(est, cost, 0.0, 10, order="value").positions) == 5
    r = select_shortlist(est, cost, 0.0, 5, order="random", rng=np.random.default_rng(0))
    assert sorted(r.positions) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="rng"):
        select_shortlist(est, cost, 0.0, 2, order="random")
    with pytest.raises(ValueError, match="size"):
        select_shortlist(est, cost, 0.0, 0)


@pytest.fixture(scope="module")
def evidence(synthetic_world):
    table, _, _ = synthetic_world
    return KnnProbeRouter(ProbeIndex.from_table(table, HashEmbedder()), HashEmbedder(), k=10)


@pytest.fixture(scope="module")
def env(synthetic_world, evidence):
    table, splits, _ = synthetic_world
    return RoutingEnv(table, splits, EnvConfig(min_pool=5, max_pool=6, max_rounds=2, shortlist=3), evidence=evidence)


def test_env_shows_the_evidence_shortlist(env, evidence):
    rng = np.random.default_rng(3)
    for _ in range(20):
        ep = env.sample_episode(rng)
        spec = ep.spec
        assert len(spec.pool) == 3 and len(spec.evidence) == 3
        assert all(env.seen[j] for j in spec.pool)  # still seen models only
        text = episode_prompt(_Tok(), spec)
        for k, est in enumerate(spec.evidence):
            assert f"[{k + 1}] est. accuracy {est:.2f}" in text
    # Evaluation episodes list the shortlist cheapest first, with the evidence router's estimates.
    table = env.table
    prompt = int(table.prompts_in("test")[0])
    pool = np.flatnonzero(table.available[prompt])
    ep = env.episode(prompt, pool, 0.1, training=False)
    descs = [env.descriptors[table.models[j]] for j in pool]
    full = shortlist_for(evidence, env.query(prompt), descs, 0.1, 3, order="cost")
    assert ep.spec.pool == tuple(int(pool[p]) for p in full.positions)
    assert ep.spec.evidence == full.estimates
    costs = [d.estimate_cost_usd(ep.spec.query.tokens) for d in ep.spec.descriptors]
    assert costs == sorted(costs)


class _Tok:
    """A chat template stand-in for rendering checks."""

    def apply_chat_template(self, msgs, tokenize=False, add_generation_prompt=True):
        return "".join(f"<{m['role']}>{m['content']}\n" for m in msgs) + "<assistant>"


def test_env_without_evidence_router_refuses_shortlist_mode(synthetic_world):
    table, splits, _ = synthetic_world
    env = RoutingEnv(table, splits, EnvConfig(min_pool=2, max_pool=4, shortlist=2))
    with pytest.raises(ValueError, match="evidence router"):
        env.sample_episode(np.random.default_rng(0))


def test_probe_index_round_trip(tmp_path, evidence):
    path = tmp_path / "ix.npz"
    evidence.index.save(path)
    back = ProbeIndex.load(path)
    assert back.prompt_ids == evidence.index.prompt_ids
    assert np.allclose(back.embeddings, evidence.index.embeddings, atol=2e-3)
    with pytest.raises(ValueError, match="share prompt ids"):
        ProbeIndex.merge([evidence.index, back])


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_base("tiny", tiny=TinySpec(seed=5))


def test_policy_router_decides_among_the_shortlist(tiny, env, evidence):
    table = env.table
    router = PolicyRouter(*tiny, PolicyConfig(mode="fast", max_rounds=2, shortlist=3), evidence=evidence)
    prompt = int(table.prompts_in("test")[1])
    query = env.query(prompt)
    descs = [env.descriptors[table.models[j]] for j in np.flatnonzero(table.available[prompt])]
    for knob in (0.0, 0.3):
        short = router.shortlist(query, descs, knob)
        shown = {descs[p].id for p in short.positions}
        d = router.decide(query, descs, knob)
        assert d.action == "route" and d.model_id in shown
        assert sorted(m for m, _ in d.ranking) == sorted(c.id for c in descs)  # full fallback order
        assert {m for m, p in d.ranking if p > 0} <= shown
        # Second round: the called model stays on the list even when it would not be chosen.
        worst = min(range(len(descs)), key=lambda k: utility(0.0, descs[k].estimate_cost_usd(query.tokens), -1.0))
        a = [Attempt(descs[worst].id, "The answer is 4.", 0.001)]
        assert worst in router.shortlist(query, descs, knob, a).positions
        d2 = router.decide(query, descs, knob, a)
        assert d2.action in ("accept", "route") and (d2.action == "accept") == (d2.model_id == descs[worst].id)
    with pytest.raises(ValueError, match="evidence router"):
        PolicyRouter(*tiny, PolicyConfig(mode="fast", shortlist=3))


def test_checkpoint_with_evidence_loads_in_shortlist_mode(tmp_path, tiny, evidence, env):
    from peft import LoraConfig, get_peft_model

    model, tok = load_base("tiny", tiny=TinySpec(seed=5))
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    peft.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cfg = {
        "model": {"base": "tiny", "tiny": {"seed": 5}},
        "policy": {"mode": "fast", "max_rounds": 1},
        "env": {"shortlist": 2, "evidence": {"router": "knn-probe", "options": {"k": 10}, "embedder": "hash"}},
    }
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(cfg))
    evidence.index.save(tmp_path / EVIDENCE_FILE)
    router = load_policy_router(tmp_path)
    assert router.config.shortlist == 2 and router.evidence.k == 10
    table = env.table
    prompt = int(table.prompts_in("test")[2])
    descs = [env.descriptors[table.models[j]] for j in np.flatnonzero(table.available[prompt])]
    assert router.decide(env.query(prompt), descs, 0.1).model_id in {c.id for c in descs}


def test_shortlist_mode_prefix_cache_matches_the_uncached_path(tiny, env, evidence):
    table = env.table
    cached = PolicyRouter(*tiny, PolicyConfig(mode="fast", max_rounds=2, shortlist=3), evidence=evidence)
    plain = PolicyRouter(*tiny, PolicyConfig(mode="fast", max_rounds=2, shortlist=3, cache=False), evidence=evidence)
    for prompt in table.prompts_in("test")[:4]:
        query = env.query(int(prompt))
        descs = [env.descriptors[table.models[j]] for j in np.flatnonzero(table.available[prompt])]
        a, b = cached.decide(query, descs, 0.1), plain.decide(query, descs, 0.1)
        assert a.model_id == b.model_id
        assert dict(a.ranking).keys() == dict(b.ranking).keys()
        assert max(abs(p - dict(b.ranking)[m]) for m, p in a.ranking) < 1e-4
    assert len(cached.prefix_cache) == 1  # one system-message prefix serves every query


def test_ship_copies_what_serving_needs(tmp_path, evidence):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    from routerl.train.ship import WEIGHTS, main, ship

    src = tmp_path / "final"
    model, tok = load_base("tiny", tiny=TinySpec(seed=5))
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(src)
    tok.save_pretrained(src)
    evidence.index.save(src / EVIDENCE_FILE)
    (src / CONFIG_FILE).write_text(yaml.safe_dump({"model": {"base": "tiny"}}))
    assert main([str(src), "--to", str(tmp_path / "out")]) == 2  # a tiny test model is never shipped
    (src / CONFIG_FILE).write_text(yaml.safe_dump({"model": {"base": "smollm2-135m-instruct"}, "env": {"shortlist": 4}}))
    files = {f.name for f in ship(src, tmp_path / "out")}
    assert files == {"adapter_config.json", WEIGHTS, CONFIG_FILE, EVIDENCE_FILE}  # no tokenizer, no training state
    a, b = load_file(str(src / WEIGHTS)), load_file(str(tmp_path / "out" / WEIGHTS))
    assert a.keys() == b.keys() and all(b[k].dtype == torch.float16 for k in b)
    assert all(torch.allclose(a[k], b[k].float(), atol=1e-3) for k in a)
    assert main([str(tmp_path / "missing"), "--to", str(tmp_path / "o2")]) == 2


def test_value_order_lists_the_best_estimated_value_first_in_training_and_serving(synthetic_world, evidence, tiny):
    table, splits, _ = synthetic_world
    env = RoutingEnv(table, splits, EnvConfig(min_pool=5, max_pool=6, shortlist=3, shortlist_order="value"), evidence=evidence)
    rng = np.random.default_rng(5)
    for _ in range(10):
        spec = env.sample_episode(rng).spec
        u = [e - spec.knob * 1000 * d.estimate_cost_usd(spec.query.tokens) for e, d in zip(spec.evidence, spec.descriptors)]
        assert u == sorted(u, reverse=True)
    router = PolicyRouter(*tiny, PolicyConfig(mode="fast", shortlist=3, shortlist_order="value"), evidence=evidence)
    prompt = int(table.prompts_in("test")[0])
    descs = [env.descriptors[table.models[j]] for j in np.flatnonzero(table.available[prompt])]
    q = env.query(prompt)
    assert router.shortlist(q, descs, 0.1).positions == shortlist_for(evidence, q, descs, 0.1, 3, order="value").positions
    with pytest.raises(ValueError, match="shortlist_order"):
        EnvConfig(shortlist_order="best")
