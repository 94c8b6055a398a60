"""Fast-mode scoring and think-mode decoding with a tiny random model (fast on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from routerl.env import EnvConfig, RoutingEnv
from routerl.env.actions import parse_action
from routerl.policy import decoding
from routerl.policy.loading import TinySpec, load_base
from routerl.policy.prompt import encode, episode_prompt
from routerl.policy.scoring import action_options, branch_logprobs, score_actions


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    model, tokenizer = load_base("tiny", tiny=TinySpec(layers=2, hidden=64, seed=3))
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def episode(synthetic_world):
    table, splits, _ = synthetic_world
    env = RoutingEnv(table, splits, EnvConfig(min_pool=4, max_pool=4, max_rounds=2))
    return env.sample_episode(np.random.default_rng(0))


@pytest.fixture(scope="module")
def prompt_ids(tiny, episode):
    return encode(tiny[1], episode_prompt(tiny[1], episode.spec))


def test_action_options():
    opts = action_options(4, called=[1], allow_accept=True)
    assert [o.text for o in opts] == ["<route>1</route>", "<route>3</route>", "<route>4</route>", "<accept/>"]
    assert [o.index for o in opts] == [0, 2, 3, None]
    assert action_options(2, close_think=True)[0].text == "</think><route>1</route>"


def test_fast_scores_sum_to_one_and_match_full_forward(tiny, prompt_ids):
    """The cached, batched scores equal each continuation's log-likelihood from a plain forward."""
    model, tok = tiny
    options = action_options(4, called=[2], allow_accept=True)
    probs = score_actions(model, tok, prompt_ids, options)
    assert probs.shape == (4,)
    assert torch.isclose(probs.sum(), torch.tensor(1.0), atol=1e-5)
    expected = []
    with torch.no_grad():
        for o in options:
            cont = tok(o.text, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([list(prompt_ids) + cont])
            logp = model(input_ids=ids).logits[0].float().log_softmax(-1)
            P = len(prompt_ids)
            expected.append(sum(float(logp[P - 1 + t, cont[t]]) for t in range(len(cont))))
    expected = torch.softmax(torch.tensor(expected), -1)
    assert torch.allclose(probs, expected, atol=1e-4)
    assert torch.equal(torch.argsort(probs, descending=True), torch.argsort(expected, descending=True))


def test_branch_logprobs_shares_a_prefix_across_contexts(tiny, prompt_ids):
    model, tok = tiny
    cont = tok("<route>1</route>", add_special_tokens=False)["input_ids"]
    split = len(prompt_ids) - 5
    shared = branch_logprobs(model, prompt_ids[:split], [(prompt_ids[split:], cont)], tok.pad_token_id)
    whole = branch_logprobs(model, prompt_ids, [((), cont)], tok.pad_token_id)
    assert torch.allclose(shared, whole, atol=1e-4)


def test_cut_turn_stops_after_the_action(tiny):
    _, tok = tiny
    ids = tok("<think>ok</think><route>2</route> trailing words", add_special_tokens=False)["input_ids"]
    assert tok.decode(decoding.cut_turn(tok, ids)) == "<think>ok</think><route>2</route>"
    eos_cut = decoding.cut_turn(tok, ids[:3] + [tok.eos_token_id] + ids[3:])
    assert eos_cut[-1] == tok.eos_token_id and len(eos_cut) == 4


def test_think_mode_respects_the_budget(tiny, prompt_ids):
    """A random model never closes its turn: the turn stops at budget + action tokens and the
    decision still comes out valid (fallback to the fast-mode ranking)."""
    model, tok = tiny
    turns = decoding.generate_turns(model, tok, [prompt_ids, prompt_ids[5:]], max_new_tokens=10)
    assert all(len(t) <= 10 for t in turns)
    d = decoding.think_then_act(model, tok, prompt_ids, 4, think_budget=6, action_tokens=4)
    assert d.action.kind == "route" and 0 <= d.action.index < 4
    assert d.fallback or d.forced or parse_action(d.text, 4).kind == "route"
    assert torch.isclose(d.probs.sum(), torch.tensor(1.0), atol=1e-5)
    if d.fallback:
        fast = score_actions(model, tok, prompt_ids, action_options(4))
        assert torch.allclose(d.probs, fast) and d.action.index == int(torch.argmax(fast))


def _scripted(monkeypatch, tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    monkeypatch.setattr(decoding, "generate_turns", lambda *a, **k: [ids])


def test_think_mode_takes_a_valid_generated_action(monkeypatch, tiny, prompt_ids):
    model, tok = tiny
    _scripted(monkeypatch, tok, "<think>cheap one</think><route>3</route>")
    d = decoding.think_then_act(model, tok, prompt_ids, 4)
    assert (d.action.kind, d.action.index, d.think) == ("route", 2, "cheap one")
    assert not d.forced and not d.fallback
    assert [o.index for o in d.options] == [0, 1, 2, 3]


def test_think_mode_forces_an_action_when_the_budget_runs_out(monkeypatch, tiny, prompt_ids):
    model, tok = tiny
    _scripted(monkeypatch, tok, "<think>candidate two looks cheap but")
    d = decoding.think_then_act(model, tok, prompt_ids, 4)
    assert d.forced and not d.fallback
    assert d.think == "candidate two looks cheap but"
    assert d.action.kind == "route" and d.action.index == int(torch.argmax(d.probs))
    context = list(prompt_ids) + tok("<think>candidate two looks cheap but", add_special_tokens=False)["input_ids"]
    expected = score_actions(model, tok, context, action_options(4, close_think=True))
    assert torch.allclose(d.probs, expected)


@pytest.mark.parametrize(
    "text",
    ["garbage with no action", "<route>9</route>", "<route>1</route><route>2</route>", "<accept/>", "<route>2</route>"],
)
def test_malformed_turns_fall_back_to_the_fast_ranking(monkeypatch, tiny, prompt_ids, text):
    """Out of range, conflicting, accept without an answer, or a candidate already called."""
    model, tok = tiny
    _scripted(monkeypatch, tok, text)
    d = decoding.think_then_act(model, tok, prompt_ids, 4, called=[1])
    assert d.fallback and not d.forced
    fast = score_actions(model, tok, prompt_ids, action_options(4, called=[1]))
    assert torch.allclose(d.probs, fast)
    assert d.action.kind == "route" and d.action.index != 1
    assert d.action.index == [o.index for o in action_options(4, called=[1])][int(torch.argmax(fast))]


def test_open_think_helper():
    assert decoding.open_think("<think>abc") == "abc"
    assert decoding.open_think("<think>abc <rou") == "abc "
    assert decoding.open_think("<think>abc</think>") is None
    assert decoding.open_think("no think") is None
