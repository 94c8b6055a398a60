"""``escalate_below``: a threshold on the policy's accept probability after an answer, and the
val replay that chooses it (``python -m routerl.eval.accept_threshold``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from routerl.descriptors import build_descriptors
from routerl.eval.accept_threshold import AcceptRecorder, AfterAnswer, main, replay
from routerl.eval.runner import run_router
from routerl.policy.loading import TinySpec, load_base
from routerl.policy.router import PolicyConfig, PolicyRouter
from routerl.routers.base import Attempt, Query


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_base("tiny", tiny=TinySpec(seed=5))


def _router(tiny, below=0.0):
    return PolicyRouter(*tiny, PolicyConfig(mode="fast", max_rounds=2, escalate_below=below))


def test_escalate_below_thresholds_the_accept_probability(tiny, synthetic_world):
    table, _, _ = synthetic_world
    descs = list(build_descriptors(table).values())[:4]
    q = Query("What is 2 + 2?")
    attempts = [Attempt(descs[0].id, "The answer is 4.", 0.001)]
    argmax = _router(tiny).decide(q, descs, 0.1, attempts)
    p_accept = dict(argmax.ranking)[descs[0].id]
    assert 0 < p_accept < 1
    above, below = _router(tiny, min(1.0, p_accept + 1e-6)), _router(tiny, p_accept / 2)
    routed, kept = above.decide(q, descs, 0.1, attempts), below.decide(q, descs, 0.1, attempts)
    assert routed.action == "route" and routed.model_id == max((p, m) for m, p in argmax.ranking if m != descs[0].id)[1]
    assert kept.action == "accept" and kept.model_id == descs[0].id
    assert routed.ranking == argmax.ranking == kept.ranking  # the same probabilities, another rule
    first = above.decide(q, descs, 0.1)  # a first call has no accept option: unchanged
    assert first.action == "route" and first.model_id == _router(tiny).decide(q, descs, 0.1).model_id
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="escalate_below"):
            PolicyConfig(mode="fast", escalate_below=bad)
    with pytest.raises(ValueError, match="fast mode"):
        PolicyConfig(mode="think", escalate_below=0.5)


def test_replay_matches_the_runner_and_moves_with_the_threshold(tiny, synthetic_world):
    """Replaying the recorded rule (None) gives the runner's own outcomes; threshold 0 never
    escalates, 1 escalates wherever another candidate is left."""
    table, splits, _ = synthetic_world
    prompts = table.prompts_in("val")[:6]
    recorder = AcceptRecorder(_router(tiny))
    knobs = [0.0, 1.0]
    rows = list(run_router(recorder, "policy", table, splits, prompts, build_descriptors(table), ["full"], knobs))
    ids = [table.prompt_ids[p] for p in prompts]
    assert len(recorder.records) == len(rows) == len(ids) * len(knobs)
    for k, (acc, cost, calls) in zip(knobs, replay(recorder.records, table, ids, knobs, None)):
        mine = [r for r in rows if r["knob"] == k]
        scores = [table.score[table.prompt_index(r["prompt_id"]), table.model_index(r["final"])] for r in mine]
        costs = [sum(table.cost[table.prompt_index(r["prompt_id"]), table.model_index(m)] for m in r["models"]) for r in mine]
        assert acc == pytest.approx(np.mean(scores)) and cost == pytest.approx(np.mean(costs) * 1000)
        assert calls == pytest.approx(np.mean([len(r["models"]) for r in mine]))
    assert all(c == 1.0 for *_, c in replay(recorder.records, table, ids, knobs, 0.0))
    assert all(c == 2.0 for *_, c in replay(recorder.records, table, ids, knobs, 1.0))
    rec = AfterAnswer("nope", 0.0, table.models[0], 0.5, None, False)
    with pytest.raises(ValueError, match="no recorded decision"):
        replay([rec], table, ids[:1], [0.0], 0.5)


def test_cli_refuses_bad_thresholds(capsys):
    assert main(["--data", "x.jsonl.gz", "--splits", "s.json", "--thresholds", "0.5,2"]) == 2
    assert "--thresholds" in capsys.readouterr().err
