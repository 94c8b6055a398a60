"""The validation metric's fast mode: cached turns score what recomputing the whole context scores."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from routerl.bench.validation import reference_play
from routerl.env import EnvConfig, RoutingEnv
from routerl.env.actions import format_accept
from routerl.policy.loading import TinySpec, load_base
from routerl.policy.prompt import encode
from routerl.policy.router import PolicyConfig
from routerl.train import validate as V
from routerl.train.episodes import EpisodeBank, fresh


@pytest.fixture(scope="module")
def tiny():
    """The tiny random model with a bias against ``<accept/>`` (it would always accept at once),
    so that episodes escalate after one or two answers: later turns continue a kept state."""
    torch.set_num_threads(1)
    model, tok = load_base("tiny", tiny=TinySpec(seed=5))
    head = model.get_output_embeddings()
    with torch.no_grad():
        head.bias = torch.nn.Parameter(torch.zeros(head.out_features))
        head.bias[encode(tok, format_accept())[0]] = -13.0
    return model.eval(), tok


@pytest.fixture(scope="module")
def episodes(synthetic_world, tiny):
    table, splits, _ = synthetic_world
    env = RoutingEnv(table, splits, EnvConfig(min_pool=3, max_pool=4, max_rounds=3))
    bank = EpisodeBank.sample([env], tiny[1], 6, seed=0)
    return [bank.fresh(p) for p in bank.prompts]


def test_cached_fast_play_matches_the_whole_context_recomputed(monkeypatch, tiny, episodes):
    model, tok = tiny
    policy = PolicyConfig(prompt_style="verbose")
    sweep = [fresh(dataclasses.replace(e, spec=dataclasses.replace(e.spec, knob=k))) for k in (0.0, 10.0) for e in episodes]
    seen: list[torch.Tensor] = []
    real = V.packed_logprobs_many

    def record(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(torch.softmax(out[0], -1))
        return out

    monkeypatch.setattr(V, "packed_logprobs_many", record)
    V._play_fast(model, tok, sweep, policy)

    expected = []
    replayed = [fresh(g) for g in sweep]
    for g in replayed:
        expected += reference_play(model, tok, g, policy)
    assert [g.calls for g in sweep] == [g.calls for g in replayed]
    assert [g.outcome for g in sweep] == [g.outcome for g in replayed]
    assert len(seen) == len(expected)
    for got, want in zip(seen, expected):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    assert {len(g.calls) for g in sweep} == {2, 3}, "later turns (accepting and escalating) must be covered"


def test_shared_state_leaves_every_prompt_a_token(tiny):
    model, _ = tiny
    assert V._shared_state(model, [[1, 2, 3], [1, 2, 3]]).length == 2
    assert V._shared_state(model, [[1, 2, 3], [1, 2, 4, 5]]).length == 2
    assert V._shared_state(model, [[1, 2], [3, 4]]) is None
    assert V._shared_state(model, []) is None
