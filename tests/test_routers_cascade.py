"""The answer check and the ``cascade`` router (learned, then accept or escalate after reading
each answer) on the synthetic world, whose wrong answers never agree with each other."""

from __future__ import annotations

import numpy as np
import pytest

from routerl.descriptors import build_descriptors
from routerl.eval.runner import evaluation_prompts, pool_masks, run_router
from routerl.routers.answer_check import CHECK_FEATURES, Answer, AnswerCheck, check_features, extract_answer, fit_answer_check
from routerl.routers.base import Attempt
from routerl.routers.cascade import next_call
from routerl.routers.recorded import recorded_queries
from routerl.routers.registry import RouterResources, build_router

FAST = {"max_iter": 60}
KNOBS = (0.0, 0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Step by step... The answer is (E).", "e"),
        ("the answer is: **C**", "c"),
        ('{"reasoning": "...", "answer": "[(4, 1), (2, 3)]"}', "[(4,1),(2,3)]"),
        ('{"answer": "1,200.50"}', "1200.5"),
        ("so we get \\boxed{42} as the result", "42"),
        ("The answer is 7 apples. Earlier I thought the answer is 5.", "5"),
        ("I could not solve this.", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_check_features_read_agreement_with_peers():
    right = Answer(0.6, "The answer is (B).")
    same, other = Answer(0.9, "So the answer is B"), Answer(0.3, "The answer is (D).")
    alone = check_features(right)
    assert alone.shape == (len(CHECK_FEATURES),)
    named = dict(zip(CHECK_FEATURES, alone))
    assert named["has_peers"] == 0 and named["agrees_any"] == 0 and named["no_answer"] == 0
    agree = dict(zip(CHECK_FEATURES, check_features(right, [same, other])))
    assert agree["agrees_any"] == 1 and agree["agree_share"] == 0.5
    assert agree["best_agreeing_logit"] == pytest.approx(np.log(0.9 / 0.1)) and agree["disagreed_best_logit"] == 0
    disagree = dict(zip(CHECK_FEATURES, check_features(right, [other])))
    assert disagree["agrees_any"] == 0 and disagree["disagreed_best_logit"] == pytest.approx(np.log(0.3 / 0.7))
    assert dict(zip(CHECK_FEATURES, check_features(Answer(0.5, "no idea"))))["no_answer"] == 1


def test_answer_check_round_trips_and_validates():
    check = AnswerCheck(tuple(float(i) for i in range(len(CHECK_FEATURES))), -1.0)
    assert AnswerCheck.from_dict(check.to_dict()) == check
    with pytest.raises(ValueError, match="weights"):
        AnswerCheck((1.0,), 0.0)
    with pytest.raises(ValueError, match="features"):
        AnswerCheck.from_dict({**check.to_dict(), "features": ["x"]})
    with pytest.raises(ValueError, match="both correct and wrong"):
        fit_answer_check(np.zeros((4, len(CHECK_FEATURES))), np.ones(4, dtype=bool))


def test_next_call_escalates_only_when_the_gain_pays():
    estimates, costs = np.array([0.5, 0.85, 0.8]), np.array([1e-6, 1e-5, 2e-6])  # USD per query
    # After [0] judged 0.3 right: the best uncalled by utility at knob 0 is [1] (gain 0.55).
    assert next_call(estimates, costs, 0.0, [0], 0.3, 0.0) == 1
    # At knob 10 (x $1k), utility favours [2] (0.8 - 0.02 > 0.85 - 0.1); its gain 0.5 pays for 0.02.
    assert next_call(estimates, costs, 10.0, [0], 0.3, 0.0) == 2
    assert next_call(estimates, costs, 10.0, [0], 0.3, 0.5) is None  # the margin raises the bar
    assert next_call(estimates, costs, 0.0, [0], 0.95, 0.0) is None  # a trusted answer is kept
    assert next_call(estimates, costs, 0.0, [0, 1, 2], 0.0, 0.0) is None  # nobody left


@pytest.fixture(scope="module")
def fitted(synthetic_world):
    table, splits, _ = synthetic_world
    resources = RouterResources(table=table, splits=splits, embedder="hash")
    return build_router("cascade", resources, **FAST), build_router("learned", resources, **FAST)


def test_the_check_trusts_agreement(fitted):
    cascade, _ = fitted
    w = dict(zip(CHECK_FEATURES, cascade.check.weights))
    assert w["agrees_any"] > 0 and w["logit_estimate"] > 0 and w["hedged"] < 0
    answer = Answer(0.5, "The answer is 12.")
    assert cascade.check.prob(answer, [Answer(0.5, "the answer is 12")]) > cascade.check.prob(answer) > cascade.check.prob(answer, [Answer(0.5, "The answer is 13.")])
    assert cascade.info["margin"] == cascade.margin and cascade.max_rounds in (2, 3) and "val_grid" in cascade.info


def test_cascade_escalates_on_doubtful_answers(fitted, synthetic_world):
    """Synthetic answers say "not sure" mostly when wrong: the cascade's first answers that it
    escalates from hedge far more often than those it accepts; it never calls a model twice."""
    table, splits, _ = synthetic_world
    cascade, _ = fitted
    descriptors = build_descriptors(table)
    prompts = evaluation_prompts(table, "test")
    rows = list(run_router(cascade, "cascade", table, splits, prompts, descriptors, ("full",), KNOBS))
    hedged = {True: [], False: []}
    for row in rows:
        assert len(row["models"]) == len(set(row["models"])) <= cascade.max_rounds
        first = table.response(table.prompt_index(row["prompt_id"]), table.model_index(row["models"][0]))
        hedged[len(row["models"]) > 1].append("not sure" in first)
    assert len(hedged[True]) >= 10, "the cascade should escalate on some queries"
    assert np.mean(hedged[True]) > np.mean(hedged[False]) + 0.3


def test_cascade_accepts_at_the_round_limit_and_reports_its_check(fitted, synthetic_world):
    table, splits, _ = synthetic_world
    cascade, _ = fitted
    descriptors = build_descriptors(table)
    prompt = table.prompts_in("test")[0]
    query = recorded_queries(table, np.array([prompt]))[0]
    cands = [descriptors[table.models[j]] for j in table.pool(prompt, pool_masks(table, splits)["full"])]
    attempts = [Attempt(c.id, "The answer is 1.") for c in cands[: cascade.max_rounds]]
    decision = cascade.decide(query, cands, 0.0, attempts)
    assert decision.action == "accept" and decision.model_id == attempts[-1].model_id and decision.think.startswith("check ")
    first = cascade.decide(query, cands, 0.0)
    assert first.action == "route" and first.model_id == learned_choice(fitted, query, cands)


def learned_choice(fitted, query, cands):
    return fitted[1].decide(query, cands, 0.0).model_id


def test_cascade_options_are_validated(synthetic_world):
    table, splits, _ = synthetic_world
    resources = RouterResources(table=table, splits=splits, embedder="hash")
    with pytest.raises(ValueError, match="folds"):
        build_router("cascade", resources, folds=1, **FAST)
    with pytest.raises(ValueError, match="'margin' must be float"):
        build_router("cascade", resources, margin="lots", **FAST)
    with pytest.raises(ValueError, match="takes no options|unknown"):
        build_router("cascade", resources, colour="red", **FAST)
    fixed = build_router("cascade", resources, margin=0.05, max_rounds=2, **FAST)
    assert (fixed.margin, fixed.max_rounds) == (0.05, 2) and "val_grid" not in fixed.info


def test_cascade_oracle_accepts_right_answers_and_escalates_from_wrong_ones(fitted, synthetic_world):
    """The perfect judge: every accepted answer after an escalation-worthy wrong one is replaced;
    no right answer is ever escalated from; its accuracy at knob 0 is at least learned's (same
    first call) and the answer check's cascade's."""
    table, splits, _ = synthetic_world
    resources = RouterResources(table=table, splits=splits, embedder="hash")
    bound = build_router("cascade-oracle", resources, **FAST)
    assert bound.max_rounds == 2 and bound.name == "cascade-oracle"
    descriptors = build_descriptors(table)
    prompts = evaluation_prompts(table, "test")
    rows = {name: list(run_router(r, name, table, splits, prompts, descriptors, ("full",), (0.0,)))
            for name, r in (("bound", bound), ("cascade", fitted[0]), ("learned", fitted[1]))}

    def score(row):
        return table.score[table.prompt_index(row["prompt_id"]), table.model_index(row["final"])]

    for row, first in zip(rows["bound"], rows["learned"]):
        assert row["models"][0] == first["models"][0]  # round 1 is learned's choice
        right_first = table.score[table.prompt_index(row["prompt_id"]), table.model_index(row["models"][0])] >= 0.5
        assert len(row["models"]) == 1 if right_first else len(row["models"]) <= 2
    escalated = [r for r in rows["bound"] if len(r["models"]) > 1]
    assert len(escalated) >= 5, "wrong first answers should be escalated from at knob 0"
    acc = {name: np.mean([score(r) for r in rs]) for name, rs in rows.items()}
    assert acc["bound"] > acc["learned"] and acc["bound"] >= acc["cascade"]


def test_cascade_oracle_needs_recorded_outcomes(synthetic_world):
    table, splits, _ = synthetic_world
    resources = RouterResources(table=table, splits=splits, embedder="hash")
    bound = build_router("cascade-oracle", resources, max_rounds=3, **FAST)
    assert bound.max_rounds == 3
    with pytest.raises(AttributeError, match="no answer check"):
        bound.check  # noqa: B018 (it has none: reading one is a bug, not a None to pass along)
    with pytest.raises(ValueError, match=r"unknown option 'margin' \(it takes k, .*max_rounds, error\)"):
        build_router("cascade-oracle", resources, margin=0.1, **FAST)
    with pytest.raises(ValueError, match="error must be in"):
        build_router("cascade-oracle", resources, error=1.5, **FAST)
    with pytest.raises(ValueError, match="needs an outcome table"):
        build_router("cascade-oracle", RouterResources(embedder="hash"))
    descriptors = build_descriptors(table)
    prompt = table.prompts_in("test")[0]
    cands = [descriptors[table.models[j]] for j in table.pool(prompt, pool_masks(table, splits)["full"])]
    query = recorded_queries(table, np.array([prompt]))[0]
    first = bound.decide(query, cands, 0.0)
    unrecorded = type(query)(query.text)
    with pytest.raises(ValueError, match="recorded prompts"):
        bound.decide(unrecorded, cands, 0.0, [Attempt(first.model_id, "The answer is 1.")])


def test_cascade_oracle_error_flips_a_seeded_share_of_verdicts(synthetic_world):
    """``error=e`` flips about a share e of verdicts, the same ones on every call; 0 and 1 are
    the truth and its opposite."""
    table, splits, _ = synthetic_world
    resources = RouterResources(table=table, splits=splits, embedder="hash")
    noisy = build_router("cascade-oracle", resources, error=0.3, **FAST)
    pairs = [(table.prompt_ids[i], table.models[j]) for i in table.prompts_in("test") for j in range(len(table.models))
             if table.available[i, j]]
    flipped = [noisy.verdict(p, m) != noisy.truth(p, m) for p, m in pairs]
    assert len(pairs) > 200 and 0.2 < np.mean(flipped) < 0.4
    assert flipped == [noisy.verdict(p, m) != noisy.truth(p, m) for p, m in pairs]
    noisy.error = 1.0
    assert all(noisy.verdict(p, m) == 1.0 - noisy.truth(p, m) for p, m in pairs[:50])
