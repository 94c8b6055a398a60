"""Shortlist mode: the evidence router picks and annotates the candidates the policy reads."""

from __future__ import annotations

import shutil

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
    # Serving settings chosen at ship time land in the copied config, checked before anything is written.
    assert main([str(src), "--to", str(tmp_path / "o3"), "--policy", "dtype=int4"]) == 2
    assert main([str(src), "--to", str(tmp_path / "o3"), "--policy", "shortlist=2"]) == 2  # a training fact, not serving
    assert not (tmp_path / "o3").exists()
    assert main([str(src), "--to", str(tmp_path / "o3"), "--policy", "dtype=int8", "--policy", "action_scoring=prefix"]) == 0
    shipped = yaml.safe_load((tmp_path / "o3" / CONFIG_FILE).read_text())
    assert shipped["policy"] == {"dtype": "int8", "action_scoring": "prefix"} and shipped["env"] == {"shortlist": 4}


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


def test_compact_prompt_carries_the_same_numbers_in_fewer_tokens(env, tiny):
    from routerl.policy import prompt as P

    rng = np.random.default_rng(8)
    tok = tiny[1]
    for _ in range(5):
        spec = env.sample_episode(rng).spec
        verbose = episode_prompt(tok, spec, max_query_chars=400)
        compact = episode_prompt(tok, spec, max_query_chars=400, style="compact")
        assert P.SYSTEM_TEXT_COMPACT in compact and P.SYSTEM_TEXT_EVIDENCE in verbose
        assert f"knob {spec.knob:g}, calls {spec.max_rounds}" in compact
        assert compact.endswith("<|im_start|>assistant\n")
        for k, (d, est) in enumerate(zip(spec.descriptors, spec.evidence)):
            cost = P.format_usd_per_1k(d.estimate_cost_usd(spec.query.tokens)).lstrip("$")
            assert f"[{k + 1}] {100 * est:.0f} {cost}\n" in compact
        assert f"Q: {spec.query.text.strip()[:100]}" in compact
        dense = episode_prompt(tok, spec, max_query_chars=400, style="dense")
        assert P.SYSTEM_TEXT_DENSE in dense and dense.split(P.SYSTEM_TEXT_DENSE)[1].split("\n1 ")[0].endswith(f"knob {spec.knob:g}, calls {spec.max_rounds}")
        for k, (d, est) in enumerate(zip(spec.descriptors, spec.evidence)):
            cost = P.format_usd_per_1k(d.estimate_cost_usd(spec.query.tokens)).lstrip("$")
            assert f"\n{k + 1} {100 * est:.0f} {cost[1:] if cost.startswith('0.') else cost}\n" in dense
        assert dense.split("\nQ: ")[1] == compact.split("\nQ: ")[1]

        def suffix(text, style):
            return len(P.encode(tok, text[P.split_prompt(tok, spec.descriptors, text, evidence=True, style=style) :]))

        assert suffix(dense, "dense") < suffix(compact, "compact") < suffix(verbose, "verbose")
    with pytest.raises(ValueError, match="prompt_style"):
        episode_prompt(tok, spec, style="terse")


def test_compact_style_needs_shortlist_mode_and_round_trips_through_a_checkpoint(tmp_path, tiny, env, evidence):
    with pytest.raises(ValueError, match="prompt_style"):
        PolicyConfig(mode="fast", prompt_style="compact")
    cached = PolicyRouter(*tiny, PolicyConfig(mode="fast", max_rounds=2, shortlist=3, prompt_style="compact"), evidence=evidence)
    plain = PolicyRouter(*tiny, PolicyConfig(mode="fast", max_rounds=2, shortlist=3, prompt_style="compact", cache=False), evidence=evidence)
    table = env.table
    prompt = int(table.prompts_in("test")[3])
    query = env.query(prompt)
    descs = [env.descriptors[table.models[j]] for j in np.flatnonzero(table.available[prompt])]
    short = cached.shortlist(query, descs, 0.1)
    text = cached.prompt_text(query, short.candidates(descs), 0.1, (), short.estimates)
    assert text.startswith(tok_system(tiny[1])) and "knob 0.1, calls 2" in text
    a, b = cached.decide(query, descs, 0.1), plain.decide(query, descs, 0.1)
    assert a.model_id == b.model_id and max(abs(p - dict(b.ranking)[m]) for m, p in a.ranking) < 1e-4

    from peft import LoraConfig, get_peft_model

    model, tok = load_base("tiny", tiny=TinySpec(seed=5))
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cfg = {
        "model": {"base": "tiny", "tiny": {"seed": 5}},
        "policy": {"mode": "fast", "max_rounds": 1, "prompt_style": "compact", "dtype": "bfloat16"},
        "env": {"shortlist": 2, "evidence": {"router": "knn-probe", "options": {"k": 10}, "embedder": "hash"}},
    }
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(cfg))
    evidence.index.save(tmp_path / EVIDENCE_FILE)
    router = load_policy_router(tmp_path)
    assert router.config.prompt_style == "compact" and router.config.dtype == "bfloat16"
    assert next(router.model.parameters()).dtype == torch.bfloat16
    assert router.decide(query, descs, 0.1).model_id in {c.id for c in descs}


def tok_system(tok):
    from routerl.policy import prompt as P

    return tok.apply_chat_template([{"role": "system", "content": P.SYSTEM_TEXT_COMPACT}], tokenize=False).split(P.SYSTEM_TEXT_COMPACT)[0]


@pytest.mark.parametrize("style", ["verbose", "compact", "dense"])
def test_fast_decide_batch_scores_requests_together_with_the_same_numbers(tiny, env, evidence, style):
    """The server's micro-batches: every request sharing the cached system message runs in one
    forward pass, and each decision equals the one-by-one decision (probabilities within 1e-4)."""
    from routerl.routers.base import RouteCall

    router = PolicyRouter(*tiny, PolicyConfig(mode="fast", max_rounds=2, shortlist=3, prompt_style=style), evidence=evidence)
    table = env.table
    calls = []
    for j, prompt in enumerate(table.prompts_in("test")[:4]):
        descs = [env.descriptors[table.models[m]] for m in np.flatnonzero(table.available[prompt])]
        calls.append(RouteCall(env.query(int(prompt)), descs, (0.0, 0.1, 1.0, 0.3)[j]))
    first = calls[0]
    calls.append(RouteCall(first.query, first.candidates, 0.1, [Attempt(first.candidates[0].id, "The answer is 4.", 0.001)]))
    one = [router.decide(c.query, c.candidates, c.knob, c.attempts) for c in calls]
    embedded = []
    embed = router.evidence.embedder.embed
    router.evidence.embedder.embed = lambda texts: embedded.append(list(texts)) or embed(texts)
    passes = []
    hook = router.model.get_decoder().register_forward_hook(lambda *a: passes.append(1))
    try:
        batch = router.decide_batch(calls)
    finally:
        hook.remove()
        router.evidence.embedder.embed = embed
    # The system message was cached by the one-by-one calls; one pass for all five (compact and
    # dense: their knob lines differ, so each row continues its own cached knob line).
    assert len(passes) == 1
    assert embedded[0] == [c.query.text for c in calls]  # the batch's queries are embedded together first
    for a, b in zip(batch, one):
        assert (a.action, a.model_id) == (b.action, b.model_id)
        assert dict(a.ranking).keys() == dict(b.ranking).keys()
        assert max(abs(p - dict(b.ranking)[m]) for m, p in a.ranking) < 1e-4


@pytest.mark.parametrize("style", ["compact", "dense"])
def test_fused_engine_and_cached_knob_line_give_the_uncached_numbers(tiny, env, evidence, style):
    """``engine: fused`` with the knob line in the cached prefix: every decision (first calls at
    several knobs, a second round, a micro-batch) equals the uncached transformers path."""
    from routerl.routers.base import RouteCall

    fused = PolicyRouter(*tiny, PolicyConfig(mode="fast", max_rounds=2, shortlist=3, prompt_style=style, engine="fused"), evidence=evidence)
    plain = PolicyRouter(*tiny, PolicyConfig(mode="fast", max_rounds=2, shortlist=3, prompt_style=style, cache=False), evidence=evidence)
    table = env.table
    calls = []
    for j, prompt in enumerate(table.prompts_in("test")[:3]):
        descs = [env.descriptors[table.models[m]] for m in np.flatnonzero(table.available[prompt])]
        for knob in (0.0, 0.1, 0.1 + j):
            calls.append(RouteCall(env.query(int(prompt)), descs, knob))
    first = calls[0]
    calls.append(RouteCall(first.query, first.candidates, 0.1, [Attempt(first.candidates[0].id, "The answer is 4.", 0.001)]))
    ref = [plain.decide(c.query, c.candidates, c.knob, c.attempts) for c in calls]
    one = [fused.decide(c.query, c.candidates, c.knob, c.attempts) for c in calls]
    batch = fused.decide_batch(calls)
    head, _ = fused.split_ids(first.query, fused.view(first.query, first.candidates, 0.1, ())[0], 0.1, (), fused.view(first.query, first.candidates, 0.1, ())[1])
    assert fused.tokenizer.decode(head).endswith("knob 0.1, calls 2\n")  # the knob line is cached
    for got in (one, batch):
        for a, b in zip(got, ref):
            assert (a.action, a.model_id) == (b.action, b.model_id)
            assert max(abs(p - dict(b.ranking)[m]) for m, p in a.ranking) < 1e-4
    with pytest.raises(ValueError, match="engine"):
        PolicyConfig(mode="fast", engine="fused", dtype="int8")
    with pytest.raises(ValueError, match="engine"):
        PolicyConfig(mode="fast", engine="onnx")


def test_ship_replaces_the_destination_only_when_everything_was_written(tmp_path, evidence):
    """A damaged source leaves the destination (by default the shipped policy) as it was; a
    destination holding other files is refused; the shipped policy can be re-shipped in place."""
    from peft import LoraConfig, get_peft_model

    from routerl.train.ship import WEIGHTS, main, ship

    src = tmp_path / "final"
    model, _ = load_base("tiny", tiny=TinySpec(seed=5))
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(src)
    evidence.index.save(src / EVIDENCE_FILE)
    (src / CONFIG_FILE).write_text(yaml.safe_dump({"model": {"base": "smollm2-135m-instruct"}, "env": {"shortlist": 4}}))
    dst = tmp_path / "shipped"
    ship(src, dst)
    before = {p.name: p.read_bytes() for p in dst.iterdir()}

    damaged = tmp_path / "damaged"
    shutil.copytree(src, damaged)
    (damaged / WEIGHTS).write_bytes((damaged / WEIGHTS).read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot read the adapter weights"):
        ship(damaged, dst)
    (damaged / WEIGHTS).write_bytes((src / WEIGHTS).read_bytes())
    (damaged / "adapter_config.json").write_text("{not json")
    assert main([str(damaged), "--to", str(dst)]) == 2
    (damaged / "adapter_config.json").write_text((src / "adapter_config.json").read_text())
    (damaged / EVIDENCE_FILE).unlink()  # a shortlist checkpoint without evidence: rebuilt from tables it does not name
    with pytest.raises(ValueError, match="no outcome tables"):
        ship(damaged, dst)
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged", "final", "shipped"]  # no staging left behind

    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("important")
    with pytest.raises(ValueError, match=r"holds files ship does not write \(notes.txt\)"):
        ship(src, other)
    assert (other / "notes.txt").read_text() == "important"

    assert main([str(dst), "--to", str(dst), "--policy", "dtype=float32"]) == 0  # in place
    assert sorted(p.name for p in dst.iterdir()) == sorted(before)
    assert yaml.safe_load((dst / CONFIG_FILE).read_text())["policy"]["dtype"] == "float32"
