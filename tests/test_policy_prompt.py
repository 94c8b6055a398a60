"""Prompt rendering: candidates first, the knob and call limit, the query, earlier attempts."""

from __future__ import annotations

import numpy as np
import pytest

from routerl.env import EnvConfig, RoutingEnv
from routerl.policy import prompt as P
from routerl.policy.loading import load_tokenizer
from routerl.routers.base import Attempt, Query


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny")


@pytest.fixture(scope="module")
def env(synthetic_world):
    table, splits, _ = synthetic_world
    return RoutingEnv(table, splits, EnvConfig(min_pool=3, max_pool=4, max_rounds=2))


def test_user_text_puts_candidates_first_then_query_then_knob(env):
    ep = env.sample_episode(np.random.default_rng(0))
    q = ep.spec.query
    text = P.user_text(q, ep.spec.descriptors, knob=0.3, max_rounds=2)
    cands = P.candidate_block(ep.spec.descriptors)
    assert text.startswith(cands + "\n")
    assert text.index(q.text) < text.index("Est $ per 1k queries") < text.index("Cost knob: 0.3")
    assert "Calls allowed: 2." in text
    assert f"[{len(ep.spec.pool)}]" in text and f"[{len(ep.spec.pool) + 1}]" not in text


def test_render_prompt_is_chat_template_plus_transcript(env, tokenizer):
    ep = env.sample_episode(np.random.default_rng(1))
    q, descs = ep.spec.query, ep.spec.descriptors
    head = P.render_prompt(tokenizer, q, descs, 0.1)
    assert head.count("<|im_start|>") == 3 and head.endswith("<|im_start|>assistant\n")
    assert P.SYSTEM_TEXT in head
    attempts = [Attempt(descs[1].id, "The answer is 4.", 0.0021)]
    full = P.render_prompt(tokenizer, q, descs, 0.1, attempts)
    assert full == head + "<route>2</route><info>[2] answered (cost $2.100/1k q): The answer is 4.</info>"


def test_info_block_matches_the_environment(env):
    """Serving shows earlier answers exactly as the environment did during training."""
    ep = env.sample_episode(np.random.default_rng(2))
    ep.max_info_chars = 40
    for k in range(len(ep.spec.pool)):
        assert P.info_block(k, ep.responses[k], ep.costs[k], 40) == ep.info_text(k)


def test_attempt_outside_candidates_shows_only_its_info(env):
    ep = env.sample_episode(np.random.default_rng(3))
    text = P.transcript(ep.spec.descriptors, [Attempt("not-a-candidate", "hi", 0.0)])
    assert text.startswith("<info>[0] answered") and "<route>" not in text


def test_long_query_is_cut_in_the_middle(env):
    ep = env.sample_episode(np.random.default_rng(4))
    long = Query("A" * 1000 + "MIDDLE" + "Z" * 1000, domain="math", prompt_tokens=500)
    text = P.user_text(long, ep.spec.descriptors, 0.0, max_query_chars=200)
    assert "MIDDLE" not in text and "AAAA" in text and "ZZZZ" in text and " ... " in text


def test_episode_prompt_is_deterministic(env, tokenizer):
    ep = env.sample_episode(np.random.default_rng(5))
    assert P.episode_prompt(tokenizer, ep.spec) == P.episode_prompt(tokenizer, ep.spec)
    assert f"Calls allowed: {ep.spec.max_rounds}." in P.episode_prompt(tokenizer, ep.spec)


def test_candidate_block_is_query_independent(env, tokenizer):
    """The cacheable prefix (system + candidates) does not depend on the query, knob or attempts."""
    ep = env.sample_episode(np.random.default_rng(6))
    descs = ep.spec.descriptors
    a = P.render_prompt(tokenizer, Query("What is 2+2?", domain="math", prompt_tokens=7), descs, 0.0)
    b = P.render_prompt(tokenizer, Query("Write a poem " * 50, domain="writing"), descs, 3.0, [Attempt(descs[0].id, "x", 0.001)], max_rounds=2)
    n = P.split_prompt(tokenizer, descs, a)
    assert n == P.split_prompt(tokenizer, descs, b) and a[:n] == b[:n]
    assert a[:n].endswith(P.candidate_block(descs)) and "est" not in P.candidate_block(descs).lower()


def test_query_token_cut_keeps_head_and_tail(tokenizer):
    q = Query("alpha " * 200 + "MIDDLE " + "omega " * 200, domain="math")
    cut = P.cut_query_tokens(tokenizer, q, 40)
    assert len(P.encode(tokenizer, cut.text)) <= 50 and "MIDDLE" not in cut.text
    assert cut.text.startswith("alpha") and cut.text.rstrip().endswith("omega") and cut.tokens == q.tokens
    assert P.cut_query_tokens(tokenizer, q, 0) is q
