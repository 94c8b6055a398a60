"""Baseline routers and the learned router on the synthetic world (hash embedder: fast)."""

from __future__ import annotations

import numpy as np
import pytest

from routerl.data.outcomes import OutcomeTable
from routerl.descriptors import build_descriptors
from routerl.eval.metrics import compute_metrics
from routerl.eval.runner import evaluation_prompts, pool_masks, run_router
from routerl.routers.base import Query
from routerl.routers.knn_probe import knn_estimate
from routerl.routers.learned import seen_model_pairs
from routerl.routers.recorded import recorded_queries
from routerl.routers.registry import RouterResources, build_router, router_names

ROUTERS = ("random", "cheapest", "best-single", "oracle", "knn-probe", "cluster-probe", "learned")
KNOBS = (0.0, 0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
FAST_LEARNED = {"max_iter": 60}


def _build(name: str, table, splits, seed: int = 0):
    resources = RouterResources(table=table, splits=splits, seed=seed, embedder="hash")
    return build_router(name, resources, **(FAST_LEARNED if name in ("learned", "cascade") else {}))


@pytest.fixture(scope="module")
def evaluated(synthetic_world):
    """Decision rows and metrics of every router on the synthetic world's test prompts."""
    table, splits, _ = synthetic_world
    descriptors = build_descriptors(table)
    prompts = evaluation_prompts(table, "test")
    routers = {name: _build(name, table, splits) for name in ROUTERS}
    rows = []
    for name, router in routers.items():
        rows += list(run_router(router, name, table, splits, prompts, descriptors, ("seen", "full"), KNOBS))
    return routers, rows, compute_metrics(rows, {table.name: table}, splits)


def test_every_baseline_is_registered():
    assert set(ROUTERS) <= set(router_names())


def test_oracle_dominates_accuracy_at_knob_zero_and_aiq(evaluated):
    _, _, metrics = evaluated
    for pool, info in metrics["datasets"]["synthetic"]["pools"].items():
        routers = info["routers"]
        oracle = routers["oracle"]
        acc0 = {n: next(p["accuracy"] for p in r["points"] if p["knob"] == 0.0) for n, r in routers.items()}
        for name, r in routers.items():
            assert acc0["oracle"] >= acc0[name], (pool, name)
            assert oracle["aiq"] >= r["aiq"], (pool, name)
        # The oracle router's rows agree with the metrics' own oracle reference.
        assert oracle["aiq"] == pytest.approx(info["oracle"]["aiq"], abs=1e-4)


def test_knn_probe_beats_random(evaluated):
    _, _, metrics = evaluated
    for info in metrics["datasets"]["synthetic"]["pools"].values():
        assert info["routers"]["knn-probe"]["aiq"] > info["routers"]["random"]["aiq"] + 0.05


def test_learned_beats_random(evaluated):
    _, _, metrics = evaluated
    for info in metrics["datasets"]["synthetic"]["pools"].values():
        assert info["routers"]["learned"]["aiq"] > info["routers"]["random"]["aiq"] + 0.05


def test_cheapest_picks_the_lowest_estimated_cost(synthetic_world):
    table, splits, _ = synthetic_world
    descriptors = build_descriptors(table)
    router = _build("cheapest", table, splits)
    for query, prompt in zip(recorded_queries(table, table.prompts_in("test")[:30]), table.prompts_in("test")[:30]):
        cands = [descriptors[table.models[j]] for j in table.pool(prompt, table.priced)]
        costs = [c.estimate_cost_usd(query.tokens) for c in cands]
        for decision in router.decide_many(query, cands, KNOBS):
            assert decision.model_id == cands[int(np.argmin(costs))].id


def test_random_is_deterministic_per_prompt_and_seeded(synthetic_world):
    table, splits, _ = synthetic_world
    descriptors = build_descriptors(table)
    cands = list(descriptors.values())
    queries = recorded_queries(table, table.prompts_in("test")[:40])
    a, b, c = (_build("random", table, splits, seed=s) for s in (0, 0, 1))
    picks_a = [a.decide(q, cands, 0.0).model_id for q in queries]
    assert picks_a == [b.decide(q, cands, 5.0).model_id for q in queries]
    assert picks_a != [c.decide(q, cands, 0.0).model_id for q in queries]
    assert len(set(picks_a)) > 1


def test_best_single_routes_to_the_best_train_model_with_fallback(synthetic_world):
    table, splits, _ = synthetic_world
    router = _build("best-single", table, splits)
    descriptors = build_descriptors(table)
    seen = [m for m in table.models if splits.is_seen(table.name, m)]
    best = max(seen, key=lambda m: router.accuracy[m])
    query = Query(text="anything", prompt_tokens=100)
    assert router.decide(query, [descriptors[m] for m in seen], 0.0).model_id == best
    rest = [descriptors[m] for m in seen if m != best]
    second = max((d.id for d in rest), key=lambda m: router.accuracy[m])
    assert router.decide(query, rest, 0.0).model_id == second


def test_oracle_needs_a_recorded_prompt(synthetic_world):
    table, splits, _ = synthetic_world
    router = _build("oracle", table, splits)
    with pytest.raises(ValueError, match="prompt_id"):
        router.decide(Query(text="hi"), list(build_descriptors(table).values()), 0.0)


def test_unknown_router_options_are_rejected(synthetic_world):
    table, splits, _ = synthetic_world
    resources = RouterResources(table=table, splits=splits, embedder="hash")
    with pytest.raises(ValueError, match=r"router 'knn-probe': unknown option 'neighbours' \(it takes k, prior_weight\)"):
        build_router("knn-probe", resources, neighbours="3")
    with pytest.raises(ValueError, match="'k' must be int"):
        build_router("knn-probe", resources, k="many")
    for bad in (2.5, True, float("inf")):  # never truncated or read as 1
        with pytest.raises(ValueError, match=r"option 'k' must be int"):
            build_router("knn-probe", resources, k=bad)
    assert build_router("knn-probe", resources, k=3.0).k == 3
    with pytest.raises(ValueError, match=r"router 'oracle': unknown option 'k' \(it takes no options\)"):
        build_router("oracle", resources, k=3)
    # descriptor-score and evidence: no traceback-level errors for unknown or non-numeric options
    with pytest.raises(ValueError, match=r"router 'descriptor-score': option 'prior' must be float, got 'abc'"):
        build_router("descriptor-score", resources, prior="abc")
    with pytest.raises(ValueError, match=r"unknown option 'bogus' \(it takes prior, temperature\)"):
        build_router("descriptor-score", resources, bogus=1)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        build_router("descriptor-score", resources, temperature=0)
    with pytest.raises(ValueError, match=r"router 'evidence': unknown option 'k' \(it takes checkpoint\)"):
        build_router("evidence", resources, k=3)
    with pytest.raises(ValueError, match="unknown router"):
        build_router("no-such-router", resources)


def test_knn_estimate_uses_only_results_the_model_has():
    sims = np.array([[0.9, 0.8, 0.1, 0.0]])
    results = np.array([[1.0, np.nan, 0.0, 0.0], [np.nan, np.nan, np.nan, np.nan]])
    est, count, sim = knn_estimate(sims, results, k=2)
    assert est[0, 0] == pytest.approx(0.5) and count[0, 0] == 2  # prompts 0 and 2
    assert sim[0, 0] == pytest.approx(0.5)
    assert np.isnan(est[0, 1]) and count[0, 1] == 0


def _scrambled(table: OutcomeTable, splits) -> OutcomeTable:
    """A copy whose unseen models' non-probe scores and every model's test scores are flipped."""
    out = table.subset(np.arange(table.n_prompts))
    score = out.score.copy()
    unseen = table.unseen_mask(splits)
    not_probe = table.split != "probe"
    score[np.ix_(not_probe, unseen)] = 1.0 - score[np.ix_(not_probe, unseen)]
    test = table.split == "test"
    score[test] = 1.0 - score[test]
    out.score = score
    return out


@pytest.mark.parametrize("name", ["best-single", "knn-probe", "cluster-probe", "learned", "cascade"])
def test_fitting_never_reads_unseen_models_or_test_rows(synthetic_world, name):
    """Routers fitted on a table whose unseen models' train/val/test rows (and all test rows) are
    scrambled decide exactly as those fitted on the true table."""
    table, splits, _ = synthetic_world
    scrambled = _scrambled(table, splits)
    assert (scrambled.score != table.score).any()
    descriptors = build_descriptors(table)
    assert descriptors == build_descriptors(scrambled)  # descriptors read probe rows only
    a, b = _build(name, table, splits), _build(name, scrambled, splits)
    prompts = table.prompts_in("test")[:40]
    full = pool_masks(table, splits)["full"]
    for query, prompt in zip(recorded_queries(table, prompts), prompts):
        cands = [descriptors[table.models[j]] for j in table.pool(prompt, full)]
        if hasattr(a, "predict"):
            np.testing.assert_array_equal(a.predict(query, cands), b.predict(query, cands))
        assert a.decide(query, cands, 0.1).model_id == b.decide(query, cands, 0.1).model_id
    if name == "cascade":  # its answer check, margin and round limit too
        assert (a.check, a.margin, a.max_rounds) == (b.check, b.margin, b.max_rounds)


def test_learned_training_rows_refuse_unseen_models(synthetic_world):
    table, splits, _ = synthetic_world
    router = _build("learned", table, splits)
    unseen = sorted(splits.unseen_models(table.name))[0]
    with pytest.raises(ValueError, match="not a seen model"):
        seen_model_pairs(table, splits, "train", build_descriptors(table, [unseen]), router.features, router.embedder)


def test_evaluation_prompts_sample_is_seeded_and_spans_the_split(synthetic_world):
    table, _, _ = synthetic_world
    test = table.prompts_in("test")
    a = evaluation_prompts(table, "test", sample=20, seed=1)
    assert len(a) == 20 and set(a) <= set(test) and list(a) == sorted(a)
    assert list(a) == list(evaluation_prompts(table, "test", sample=20, seed=1))
    assert list(a) != list(test[:20])  # not just the head of the split
    assert len(evaluation_prompts(table, "test", sample=10_000)) == len(test)
    with pytest.raises(ValueError, match="--sample"):
        evaluation_prompts(table, "test", sample=0)
