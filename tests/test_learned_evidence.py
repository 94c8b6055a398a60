"""The learned router as the policy's evidence: trees as arrays, pooled and cross-fitted fitting,
and a checkpoint that serves from ``evidence.npz`` + ``learned.npz`` without the outcome tables."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from sklearn.ensemble import HistGradientBoostingRegressor

from routerl.data.embeddings import HashEmbedder
from routerl.env import EnvConfig, RoutingEnv
from routerl.policy.loading import TinySpec, load_base
from routerl.policy.router import CONFIG_FILE, EVIDENCE_FILE, load_evidence, load_policy_router
from routerl.routers.learned import LearnedRouter
from routerl.routers.learned_evidence import LEARNED_FILE, CrossFitLearnedRouter, fit_pooled_evidence, load_learned, save_learned
from routerl.routers.tree_ensemble import TreeEnsemble


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    x[rng.random(x.shape) < 0.2] = np.nan  # missing values take the learned side
    y = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) ** 2 + np.isnan(x[:, 2]) + 0.1 * rng.normal(size=n)
    return x, y


def test_tree_ensemble_predicts_what_sklearn_predicts_and_round_trips(tmp_path):
    x, y = _data(3000, 0)
    model = HistGradientBoostingRegressor(max_iter=60, max_leaf_nodes=31, min_samples_leaf=20, early_stopping=False).fit(x, y)
    trees = TreeEnsemble.from_sklearn(model)
    assert trees.feature.shape[0] == 60 and trees.depth >= 5
    xt, _ = _data(400, 1)
    np.testing.assert_allclose(trees.predict(xt), model.predict(xt), rtol=0, atol=1e-9)
    np.savez(tmp_path / "t.npz", **trees.arrays("t_"))
    with np.load(tmp_path / "t.npz", allow_pickle=False) as z:
        again = TreeEnsemble.from_arrays(z, "t_")
    np.testing.assert_array_equal(again.predict(xt), trees.predict(xt))
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        trees.predict(xt[:, :4])
    broken = trees.arrays()
    broken["left"] = broken["left"] + 1000
    with pytest.raises(ValueError, match="outside"):
        TreeEnsemble.from_arrays(broken)
    with pytest.raises(ValueError, match="missing"):
        TreeEnsemble.from_arrays({k: v for k, v in trees.arrays().items() if k != "value"})


@pytest.fixture(scope="module")
def pooled(synthetic_world):
    table, splits, _ = synthetic_world
    return fit_pooled_evidence([(table, splits)], HashEmbedder(), folds=2, max_iter=40, seed=0)


def test_train_prompts_get_estimates_from_the_regressor_that_never_saw_them(synthetic_world, pooled):
    table, splits, _ = synthetic_world
    env = RoutingEnv(table, splits, EnvConfig(max_pool=8))
    descs = [env.descriptors[m] for m in table.models[:4]]
    train = table.prompts_in("train")
    assert set(pooled.fold_of) == {table.prompt_ids[i] for i in train}  # only train prompts have a fold
    assert set(pooled.fold_of.values()) == {0, 1}
    served = pooled.serving()
    differs = 0
    for i in train[:20]:
        query = env.query(int(i))
        assert pooled.model_for(query) is pooled.fold_models[pooled.fold_of[query.prompt_id]]
        differs += not np.allclose(pooled.predict(query, descs), served.predict(query, descs))
    assert differs > 0  # out-of-fold estimates, not the full regressor's
    for i in table.prompts_in("test")[:5]:
        query = env.query(int(i))
        assert pooled.model_for(query) is pooled.model
        np.testing.assert_array_equal(pooled.predict(query, descs), served.predict(query, descs))
    assert not isinstance(served, CrossFitLearnedRouter) and isinstance(served, LearnedRouter)
    with pytest.raises(ValueError, match="folds"):
        fit_pooled_evidence([(table, splits)], HashEmbedder(), folds=1)


def test_saved_learned_evidence_serves_the_same_estimates(tmp_path, synthetic_world, pooled):
    table, splits, _ = synthetic_world
    save_learned(pooled.serving(), tmp_path / LEARNED_FILE)
    pooled.index.save(tmp_path / EVIDENCE_FILE)
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump({"env": {"shortlist": 2, "evidence": {"router": "learned", "embedder": "hash"}}}))
    loaded = load_evidence(tmp_path)
    assert isinstance(loaded, LearnedRouter) and isinstance(loaded.model, TreeEnsemble)
    env = RoutingEnv(table, splits, EnvConfig(max_pool=8))
    descs = [env.descriptors[m] for m in table.models]  # unseen models too: estimates from their descriptors
    for i in table.prompts_in("test")[:5]:
        query = env.query(int(i))
        np.testing.assert_allclose(loaded.predict(query, descs), pooled.predict(query, descs), atol=1e-6)
    # ``routerl eval --router evidence:checkpoint=DIR``: the same estimates as a single-call router
    from routerl.routers.registry import RouterResources, build_router

    router = build_router("evidence", RouterResources(embedder="hash"), checkpoint=str(tmp_path))
    query = env.query(int(table.prompts_in("test")[0]))
    d = router.decide(query, descs, 0.1)
    best = np.argmax(pooled.predict(query, descs) - 0.1 * 1000 * np.array([c.estimate_cost_usd(query.tokens) for c in descs]))
    assert router.name == "evidence" and d.model_id == descs[int(best)].id
    with pytest.raises(ValueError, match="no evidence router"):
        build_router("evidence", RouterResources(embedder="hash"), checkpoint=str(tmp_path / "nothing"))
    from routerl.routers.probe_index import ProbeIndex

    small = ProbeIndex(pooled.index.prompt_ids[:10], pooled.index.embeddings[:10], pooled.index.domains[:10])
    with pytest.raises(ValueError, match="probe prompts"):
        load_learned(tmp_path / LEARNED_FILE, small, HashEmbedder())
    (tmp_path / LEARNED_FILE).unlink()
    with pytest.raises(ValueError, match=LEARNED_FILE):
        load_evidence(tmp_path)


def test_training_config_builds_and_saves_the_learned_evidence(tmp_path, synthetic_world):
    """``env.evidence.router: learned`` in a train config: every env shares one cross-fitted router,
    and ``save_evidence`` writes what a checkpoint needs to serve it (a tiny policy loads it)."""
    from peft import LoraConfig, get_peft_model

    from routerl.train.config import ConfigError, load_config
    from routerl.train.episodes import build_envs, save_evidence

    overrides = [
        "data.synthetic={seed: 7, n_seen: 6, n_unseen: 3, n_prompts: 400}",
        "env.shortlist=2",
        "env.evidence={router: learned, options: {max_iter: 30}, embedder: hash}",
        "model.base=tiny",
    ]
    config = load_config("configs/grpo_tiny.yaml", overrides)
    envs = build_envs(config)
    assert isinstance(envs[0].evidence, CrossFitLearnedRouter)
    rng = np.random.default_rng(0)
    episode = envs[0].sample_episode(rng)
    assert len(episode.spec.evidence) == 2
    model, tok = load_base("tiny", tiny=TinySpec(seed=5))
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    save_evidence(envs, tmp_path)
    assert (tmp_path / EVIDENCE_FILE).exists() and (tmp_path / LEARNED_FILE).exists()
    cfg = {"model": {"base": "tiny", "tiny": {"seed": 5}}, "policy": {"mode": "fast", "max_rounds": 1},
           "env": {"shortlist": 2, "evidence": {"router": "learned", "options": {}, "embedder": "hash"}}}  # fmt: skip
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(cfg))
    router = load_policy_router(tmp_path)
    spec = episode.spec
    assert router.decide(spec.query, spec.descriptors, 0.1).model_id in {d.id for d in spec.descriptors}
    # shipping copies learned.npz, and refuses a learned-evidence checkpoint without it
    from routerl.train.ship import ship

    shipped = dict(cfg, model={"base": "smollm2-135m-instruct"})
    (tmp_path / CONFIG_FILE).write_text(yaml.safe_dump(shipped))
    assert LEARNED_FILE in {f.name for f in ship(tmp_path, tmp_path / "shipped")}
    (tmp_path / LEARNED_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=LEARNED_FILE):
        ship(tmp_path, tmp_path / "shipped2")
    assert not (tmp_path / "shipped2").exists()
    with pytest.raises(ConfigError, match="env.evidence.options.depth"):
        load_config("configs/grpo_tiny.yaml", overrides[:2] + ["env.evidence={router: learned, options: {depth: 3}}"])
    with pytest.raises(ConfigError, match="env.evidence.router"):
        load_config("configs/grpo_tiny.yaml", overrides[:2] + ["env.evidence={router: oracle}"])


# -- candidates without probe results: the descriptor model --------------------------------------
@pytest.fixture(scope="module")
def learned_synthetic(synthetic_world):
    from routerl.routers.learned import fit_learned_router

    table, splits, _ = synthetic_world
    return fit_learned_router(table, splits, HashEmbedder(), max_iter=40)


def _bare(desc, score: float | None = None):
    """``desc`` as a model registered with sample scores only (no probe run); ``score``: every
    domain's sample score set to it."""
    scores = desc.sample_scores if score is None else {d: score for d in desc.sample_scores}
    return desc.with_changes(probe_results={}, sample_scores=dict(scores))


def test_candidates_without_probe_results_are_scored_by_the_descriptor_model(synthetic_world, learned_synthetic):
    from routerl.routers.learned_features import DESCRIPTOR_COLUMNS

    table, splits, _ = synthetic_world
    router = learned_synthetic
    assert router.descriptor_model is not None and router.info["descriptor_model"]["train_rows"] > 0
    without = LearnedRouter(router.index, router.embedder, router.features, router.model, router.info)
    env = RoutingEnv(table, splits, EnvConfig(max_pool=8))
    probed = [env.descriptors[m] for m in table.models[:4]]
    bare = [_bare(probed[0], 0.95), _bare(probed[0], 0.1), _bare(probed[1])]
    for i in table.prompts_in("test")[:5]:
        query = env.query(int(i))
        est = router.predict(query, probed + bare)
        # candidates with probe results: the main regressor's estimates, exactly as before
        np.testing.assert_array_equal(est[:4], without.predict(query, probed))
        # the others: the descriptor model's, over the descriptor columns only
        x = router.features.build(router.query_embedding(query)[None, :], [query.domain], np.array([query.tokens]), bare)[0]
        np.testing.assert_allclose(est[4:], np.clip(router.descriptor_model.predict(x[:, DESCRIPTOR_COLUMNS]), 0, 1))
        assert est[4] > est[5] + 0.1, "a sample score of 0.95 must be worth more than one of 0.1"


def test_the_descriptor_model_tracks_sample_scores_better_than_the_main_regressor(synthetic_world, learned_synthetic):
    """On val prompts, seen models described by sample scores alone: the descriptor model's mean
    estimate per model is closer to the model's mean val score than what the main regressor
    makes of the same descriptor (probe features missing, a case it was never fit on)."""
    table, splits, _ = synthetic_world
    router = learned_synthetic
    without = LearnedRouter(router.index, router.embedder, router.features, router.model, router.info)
    env = RoutingEnv(table, splits, EnvConfig(max_pool=8))
    seen = [m for j, m in enumerate(table.models) if table.seen_mask(splits)[j] and table.priced[j]]
    val = table.prompts_in("val")
    errors = {"descriptor model": [], "main regressor": []}
    for model in seen:
        j = table.model_index(model)
        rows = [int(i) for i in val if table.available[i, j]]
        truth = table.score[rows, j].mean()
        for name, r in (("descriptor model", router), ("main regressor", without)):
            est = np.array([r.predict(env.query(i), [_bare(env.descriptors[model])])[0] for i in rows])
            errors[name].append(abs(est.mean() - truth))
    assert np.mean(errors["descriptor model"]) < np.mean(errors["main regressor"]), errors


def test_saved_learned_keeps_the_descriptor_model_and_older_files_load_without_it(tmp_path, synthetic_world, learned_synthetic):
    from routerl.routers.learned_evidence import DESCRIPTOR_PREFIX

    table, splits, _ = synthetic_world
    save_learned(learned_synthetic, tmp_path / LEARNED_FILE)
    loaded = load_learned(tmp_path / LEARNED_FILE, learned_synthetic.index, HashEmbedder())
    env = RoutingEnv(table, splits, EnvConfig(max_pool=8))
    descs = [env.descriptors[table.models[0]], _bare(env.descriptors[table.models[1]])]
    query = env.query(int(table.prompts_in("test")[0]))
    np.testing.assert_allclose(loaded.predict(query, descs), learned_synthetic.predict(query, descs), atol=1e-9)
    with np.load(tmp_path / LEARNED_FILE, allow_pickle=False) as z:
        old = {k: z[k] for k in z.files if not k.startswith(DESCRIPTOR_PREFIX)}
    np.savez(tmp_path / "old.npz", **old)
    assert load_learned(tmp_path / "old.npz", learned_synthetic.index, HashEmbedder()).descriptor_model is None


@pytest.mark.shared_data
def test_ship_adds_the_descriptor_model_and_keeps_every_other_array(tmp_path, synthetic_world, learned_synthetic):
    """``python -m routerl.train.ship CKPT --descriptor-model``: fit on the config's tables and
    splits, written into the copy's learned.npz; the main trees are untouched."""
    from peft import LoraConfig, get_peft_model

    from routerl.routers.learned_evidence import DESCRIPTOR_PREFIX
    from routerl.train.ship import main as ship_main
    from tests.conftest import shared_file

    src = tmp_path / "ckpt"
    model, tok = load_base("tiny", tiny=TinySpec(seed=5))
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM")).save_pretrained(src)
    bare = LearnedRouter(learned_synthetic.index, learned_synthetic.embedder, learned_synthetic.features, learned_synthetic.model)
    save_learned(bare, src / LEARNED_FILE)  # a file saved before the descriptor model existed
    learned_synthetic.index.save(src / EVIDENCE_FILE)
    cfg = {"seed": 0, "model": {"base": "smollm2-135m-instruct"}, "policy": {"mode": "fast"},
           "data": {"tables": [str(shared_file("zeroeval.jsonl.gz"))], "splits": str(shared_file("splits.json"))},
           "env": {"shortlist": 2, "evidence": {"router": "learned", "options": {"max_iter": 15}, "embedder": "hash"}}}  # fmt: skip
    (src / CONFIG_FILE).write_text(yaml.safe_dump(cfg))
    assert ship_main([str(src), "--to", str(tmp_path / "out"), "--descriptor-model"]) == 0
    with np.load(src / LEARNED_FILE) as before, np.load(tmp_path / "out" / LEARNED_FILE) as after:
        assert not any(k.startswith(DESCRIPTOR_PREFIX) for k in before.files)
        assert any(k.startswith(DESCRIPTOR_PREFIX) for k in after.files)
        for k in before.files:
            np.testing.assert_array_equal(before[k], after[k])
    # a config that names no tables: refused, and the destination is left as it was
    (src / CONFIG_FILE).write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "data"}))
    assert ship_main([str(src), "--to", str(tmp_path / "out"), "--descriptor-model"]) == 2
    with np.load(tmp_path / "out" / LEARNED_FILE) as after:
        assert any(k.startswith(DESCRIPTOR_PREFIX) for k in after.files)
